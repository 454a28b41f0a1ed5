"""pymongo against a sharded mongo-sim (`--shards 2`): mongos's hello, config.chunks, change
events through mongos with the shard key in documentKey and no migration events, a transaction
across shards, `local` refused through mongos, `--auth` with `--shards` (and `$collStats` per
shard)."""

from __future__ import annotations

import pytest
from bson import MaxKey, MinKey
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from conftest import CLIENT_GUARDS


@pytest.fixture
def mongos(start_sim):
    uri = start_sim("--shards", "2").replace("?replicaSet=rs0", "")
    c = MongoClient(uri, **CLIENT_GUARDS)
    yield c
    c.close()


def shard_client(mongos, name):
    host = mongos.config.shards.find_one({"_id": name})["host"].split("/", 1)[1]
    return MongoClient(f"mongodb://{host}/?directConnection=true", **CLIENT_GUARDS)


def ranged(mongos, ns="d.r"):
    mongos.admin.command("enableSharding", ns.split(".")[0])
    mongos.admin.command("shardCollection", ns, key={"k": 1})
    mongos.admin.command("split", ns, middle={"k": 100})
    mongos.admin.command("moveChunk", ns, find={"k": 100}, to="shard1")


def test_hello_through_mongos_is_a_mongos(mongos):
    hello = mongos.admin.command("hello")
    assert hello["msg"] == "isdbgrid"
    assert "setName" not in hello and "hosts" not in hello
    assert mongos.topology_description.topology_type_name == "Sharded"


def test_config_chunks_after_shard_collection_split_and_move(mongos):
    mongos.admin.command("shardCollection", "d.r", key={"k": 1})
    [only] = list(mongos.config.chunks.find())
    assert only["min"] == {"k": MinKey()} and only["max"] == {"k": MaxKey()}
    assert only["shard"] == "shard0"
    uuid = mongos.config.collections.find_one({"_id": "d.r"})["uuid"]
    assert only["uuid"] == uuid
    mongos.admin.command("split", "d.r", middle={"k": 100})
    mongos.admin.command("moveChunk", "d.r", find={"k": 100}, to="shard1")
    chunks = list(mongos.config.chunks.find({"uuid": uuid}).sort("min", 1))
    assert [(c["min"], c["max"], c["shard"]) for c in chunks] == [
        ({"k": MinKey()}, {"k": 100}, "shard0"),
        ({"k": 100}, {"k": MaxKey()}, "shard1"),
    ]


def test_change_events_carry_the_shard_key_and_no_migration(mongos):
    ranged(mongos)
    coll = mongos.d.r
    with coll.watch(max_await_time_ms=200) as stream:
        coll.insert_one({"_id": 1, "k": 5})
        coll.insert_one({"_id": 2, "k": 150})
        mongos.admin.command("moveChunk", "d.r", find={"k": 150}, to="shard0")
        coll.update_one({"k": 150}, {"$set": {"a": 1}})
        coll.delete_one({"k": 5})
        seen = []
        while len(seen) < 4:
            change = stream.try_next()
            if change is not None:
                seen.append(change)
        assert [c["operationType"] for c in seen] == ["insert", "insert", "update", "delete"]
        assert [c["documentKey"] for c in seen] == [
            {"k": 5, "_id": 1}, {"k": 150, "_id": 2}, {"k": 150, "_id": 2}, {"k": 5, "_id": 1},
        ]
    # The shards' own oplogs hold the migration, marked fromMigrate.
    with shard_client(mongos, "shard1") as s1:
        assert s1.local["oplog.rs"].count_documents({"ns": "d.r", "fromMigrate": True}) >= 1


def test_transaction_across_shards_has_one_lsid_txn_number_and_time(mongos):
    ranged(mongos)
    coll = mongos.d.r
    with coll.watch(max_await_time_ms=200) as stream:
        with mongos.start_session() as s:
            with s.start_transaction():
                coll.insert_one({"_id": 1, "k": 1}, session=s)
                coll.insert_one({"_id": 2, "k": 200}, session=s)
        seen = []
        while len(seen) < 2:
            change = stream.try_next()
            if change is not None:
                seen.append(change)
    assert seen[0]["lsid"] == seen[1]["lsid"]
    assert seen[0]["txnNumber"] == seen[1]["txnNumber"]
    assert seen[0]["clusterTime"] == seen[1]["clusterTime"]


def test_local_oplog_through_mongos_is_refused(mongos):
    with pytest.raises(OperationFailure) as e:
        mongos.local["oplog.rs"].find_one()
    assert e.value.code == 20
    assert "Can't use 'local' database through mongos" in str(e.value)


def test_auth_through_mongos_checks_logins_and_roles(start_sim):
    """`--auth` with `--shards`: pymongo's SCRAM handshake with mongos, a read-only role refused
    a write on a sharded collection and allowed to read it, and no login refused (13)."""
    uri = start_sim("--shards", "2", "--auth", "root:R00t-pw,viewer:V1ew-pw:read@shop")
    host = uri.split("//", 1)[1].split("/", 1)[0]
    root = MongoClient(f"mongodb://root:R00t-pw@{host}/", **CLIENT_GUARDS)
    viewer = MongoClient(f"mongodb://viewer:V1ew-pw@{host}/", **CLIENT_GUARDS)
    anon = MongoClient(f"mongodb://{host}/", **CLIENT_GUARDS)
    try:
        root.admin.command("shardCollection", "shop.orders", key={"_id": "hashed"})
        root.shop.orders.insert_many([{"_id": i} for i in range(30)])
        assert viewer.shop.orders.count_documents({}) == 30
        with pytest.raises(OperationFailure) as e:
            viewer.shop.orders.insert_one({"_id": 100})
        assert e.value.code == 13
        with pytest.raises(OperationFailure) as e:
            anon.shop.orders.find_one()
        assert e.value.code == 13
        stats = list(root.shop.orders.aggregate([{"$collStats": {"count": {}}}]))
        assert sorted(s["shard"] for s in stats) == ["shard0", "shard1"]
        assert sum(s["count"] for s in stats) == 30
    finally:
        for c in (root, viewer, anon):
            c.close()


# The unified change-stream spec tests once more, through a sharded simulator's mongos: the
# runner then sees a sharded topology (so the sharded-only tests run and the replica-set-only
# ones skip).
try:
    from test_spec_change_streams import CASES
except BaseException:  # the spec fixtures are missing: that module skips itself
    CASES = []

from conftest import SimProcess  # noqa: E402
from unified_runner import ServerInfo, UnifiedSkip, UnifiedTestRunner  # noqa: E402


@pytest.fixture(scope="module")
def mongos_spec_env():
    import os

    binary = os.environ.get("MONGO_SIM_BIN")
    if not binary or not os.access(binary, os.X_OK):
        pytest.skip("needs a private simulator: MONGO_SIM_BIN is not set (run.sh sets it)")
    sim = SimProcess(binary, "--shards", "2")
    uri = sim.start().replace("?replicaSet=rs0", "")
    internal = MongoClient(uri, **CLIENT_GUARDS)
    server = ServerInfo.probe(internal)
    assert server.topology == "sharded"
    yield uri, server, internal
    internal.close()
    sim.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_spec_through_mongos(case, mongos_spec_env):
    uri, server, internal = mongos_spec_env
    runner = UnifiedTestRunner(case, uri, server, internal)
    try:
        runner.run()
    except UnifiedSkip as skip:
        pytest.skip(str(skip))
