"""pymongo 4 (unchanged) against mongo-sim: discovery, CRUD, errors, transactions, change streams,
resumability, oplog tailing and lost history.

Expected values are what a MongoDB 7.0 replica set returns (see
/work/shared/research/mongo-fidelity.md §2.4, §3). Every test works in its own database.
"""

from __future__ import annotations

import datetime
import time

import bson
import pytest
from bson import SON
from bson.binary import Binary
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp
from pymongo import (
    ASCENDING,
    DESCENDING,
    CursorType,
    DeleteOne,
    InsertOne,
    MongoClient,
    ReplaceOne,
    ReturnDocument,
    UpdateMany,
    UpdateOne,
    monitoring,
)
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from conftest import CLIENT_GUARDS, wait_until


# ------------------------------------------------------------------------------------------------
# helpers


class CommandRecorder(monitoring.CommandListener):
    """Records started / succeeded / failed command events (handshakes are not published)."""

    def __init__(self):
        self.started_events, self.succeeded_events, self.failed_events = [], [], []

    def started(self, e):
        self.started_events.append(e)

    def succeeded(self, e):
        self.succeeded_events.append(e)

    def failed(self, e):
        self.failed_events.append(e)

    def cmds(self, name):
        return [e.command for e in self.started_events if e.command_name == name]

    def replies(self, name):
        return [e.reply for e in self.succeeded_events if e.command_name == name]


@pytest.fixture
def recorded(sim_uri):
    """A client whose commands are recorded."""
    rec = CommandRecorder()
    c = MongoClient(sim_uri, event_listeners=[rec], **CLIENT_GUARDS)
    yield c, rec
    c.close()


def next_event(stream, timeout=10.0):
    """ChangeStream.next() with a deadline (next() itself would wait forever)."""
    deadline = time.monotonic() + timeout
    while stream.alive:
        doc = stream.try_next()
        if doc is not None:
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"no change event within {timeout}s")
    raise AssertionError("change stream closed without an event")


def token_ts(token) -> Timestamp:
    """The clusterTime inside a resume token: `82` + 8-byte big-endian timestamp (research §3.2)."""
    data = token["_data"]
    assert data[:2] == "82", f"resume token does not start with the KeyString timestamp tag 82: {data}"
    raw = bytes.fromhex(data[2:18])
    return Timestamp(int.from_bytes(raw[:4], "big"), int.from_bytes(raw[4:], "big"))


class FailPoint:
    def __init__(self, client, name="failCommand", **spec):
        self.client, self.name, self.spec = client, name, spec

    def __enter__(self):
        self.client.admin.command(SON([("configureFailPoint", self.name)] + list(self.spec.items())))
        return self

    def __exit__(self, *exc):
        self.client.admin.command({"configureFailPoint": self.name, "mode": "off"})


def oplog_entries(client, query):
    return list(client.local["oplog.rs"].find(query))


# ------------------------------------------------------------------------------------------------
# discovery and handshake


def test_connect_with_replica_set_discovers_primary(sim_uri):
    c = MongoClient(sim_uri, **CLIENT_GUARDS)
    try:
        assert c.admin.command("ping")["ok"] == 1
        td = c.topology_description
        assert td.topology_type_name == "ReplicaSetWithPrimary"
        assert td.replica_set_name == "rs0"
        host, port = sim_uri.split("//")[1].split("/")[0].rsplit(":", 1)
        assert c.primary == (host, int(port))
        assert [s.server_type_name for s in td.server_descriptions().values()] == ["RSPrimary"]

        hello = c.admin.command("hello")
        assert hello["setName"] == "rs0"
        assert hello["isWritablePrimary"] is True
        assert hello["secondary"] is False
        assert hello["hosts"] == [f"{host}:{port}"]
        assert hello["me"] == hello["primary"] == f"{host}:{port}"
        assert hello["maxWireVersion"] == 21  # MongoDB 7.0
        assert hello["maxBsonObjectSize"] == 16777216
        assert hello["maxMessageSizeBytes"] == 48000000
        assert hello["logicalSessionTimeoutMinutes"] == 30
        assert isinstance(hello["electionId"], ObjectId)
        legacy = c.admin.command("isMaster")
        assert legacy["ismaster"] is True and legacy["setName"] == "rs0"
        assert c.admin.command("buildInfo")["version"].startswith("7.0.")
        assert c.server_info()["versionArray"][:2] == [7, 0]
    finally:
        c.close()


def test_server_monitoring_heartbeats_keep_succeeding(sim_uri):
    class Heartbeats(monitoring.ServerHeartbeatListener):
        def __init__(self):
            self.ok, self.bad = [], []

        def started(self, e):
            pass

        def succeeded(self, e):
            self.ok.append(e)

        def failed(self, e):
            self.bad.append(e)

    hb = Heartbeats()
    c = MongoClient(sim_uri, heartbeatFrequencyMS=500, event_listeners=[hb], **CLIENT_GUARDS)
    try:
        c.admin.command("ping")
        wait_until(lambda: len(hb.ok) >= 4 or hb.bad, "four heartbeats", timeout=15)
        assert hb.bad == [], [repr(e.reply) for e in hb.bad]
        assert all(e.reply.document.get("setName") == "rs0" for e in hb.ok)
        assert c.topology_description.topology_type_name == "ReplicaSetWithPrimary"
    finally:
        c.close()


def test_seed_by_another_name_is_replaced_by_the_advertised_member(sim_uri):
    host, port = sim_uri.split("//")[1].split("/")[0].rsplit(":", 1)
    if host != "127.0.0.1":
        pytest.skip("only meaningful when the simulator listens on 127.0.0.1")
    c = MongoClient(f"mongodb://localhost:{port}/?replicaSet=rs0", **CLIENT_GUARDS)
    try:
        assert c.admin.command("ping")["ok"] == 1
        assert c.primary == ("127.0.0.1", int(port))
    finally:
        c.close()


def test_direct_connection(sim_uri):
    hostport = sim_uri.split("//")[1].split("/")[0]
    c = MongoClient(f"mongodb://{hostport}/?directConnection=true", **CLIENT_GUARDS)
    try:
        assert c.admin.command("ping")["ok"] == 1
        assert c.topology_description.topology_type_name == "Single"
    finally:
        c.close()


def test_cluster_time_is_gossiped(client, names):
    with client.start_session() as s:
        client[names.db][names.coll].insert_one({"x": 1}, session=s)
        assert isinstance(s.operation_time, Timestamp)
        assert isinstance(s.cluster_time["clusterTime"], Timestamp)
        assert s.cluster_time["clusterTime"] >= s.operation_time


# ------------------------------------------------------------------------------------------------
# CRUD


def test_insert_find_update_delete(client, names):
    coll = client[names.db][names.coll]
    assert coll.insert_one({"_id": 1, "a": 1, "tags": ["x"], "sub": {"k": 1}}).inserted_id == 1
    oid = coll.insert_one({"a": 2}).inserted_id
    assert isinstance(oid, ObjectId)
    assert coll.find_one({"_id": oid}) == {"_id": oid, "a": 2}
    ids = coll.insert_many([{"_id": i, "n": i, "g": i % 3} for i in range(10, 30)]).inserted_ids
    assert ids == list(range(10, 30))

    page = list(coll.find({"n": {"$gte": 10}}, {"n": 1, "_id": 0}).sort("n", DESCENDING).skip(2).limit(5))
    assert page == [{"n": 27}, {"n": 26}, {"n": 25}, {"n": 24}, {"n": 23}]
    both = list(coll.find({"g": {"$in": [0, 2]}, "n": {"$lt": 16}}).sort([("g", ASCENDING), ("n", DESCENDING)]))
    assert [d["_id"] for d in both] == [15, 12, 14, 11]
    assert list(coll.find({"sub.k": 1}, {"sub.k": 1})) == [{"_id": 1, "sub": {"k": 1}}]

    r = coll.update_one({"_id": 1}, {"$set": {"a": 5, "sub.j": 2}, "$inc": {"c": 3}, "$push": {"tags": "y"},
                                     "$addToSet": {"set": "s"}, "$unset": {"sub.k": ""}})
    assert (r.matched_count, r.modified_count, r.upserted_id) == (1, 1, None)
    assert coll.find_one({"_id": 1}) == {"_id": 1, "a": 5, "tags": ["x", "y"], "sub": {"j": 2}, "c": 3, "set": ["s"]}
    r = coll.update_one({"_id": 1}, {"$pull": {"tags": "x"}, "$rename": {"c": "count"}, "$max": {"a": 4}})
    assert coll.find_one({"_id": 1}) == {"_id": 1, "a": 5, "tags": ["y"], "sub": {"j": 2}, "set": ["s"], "count": 3}
    assert coll.update_one({"_id": 1}, {"$set": {"a": 5}}).modified_count == 0  # no-op update

    r = coll.update_many({"g": 0}, {"$set": {"flag": True}})
    assert r.matched_count == r.modified_count == len([i for i in range(10, 30) if i % 3 == 0])

    r = coll.update_one({"_id": 100}, {"$set": {"u": 1}}, upsert=True)
    assert (r.matched_count, r.modified_count, r.upserted_id) == (0, 0, 100)
    r = coll.update_one({"k": "v"}, {"$set": {"u": 2}}, upsert=True)
    assert isinstance(r.upserted_id, ObjectId)
    assert coll.find_one({"_id": r.upserted_id}) == {"_id": r.upserted_id, "k": "v", "u": 2}

    assert coll.replace_one({"_id": 1}, {"b": 2}).modified_count == 1
    assert coll.find_one({"_id": 1}) == {"_id": 1, "b": 2}
    after = coll.find_one_and_update({"_id": 100}, {"$inc": {"u": 1}}, return_document=ReturnDocument.AFTER)
    assert after == {"_id": 100, "u": 2}

    assert coll.delete_one({"_id": 1}).deleted_count == 1
    assert coll.delete_one({"_id": 1}).deleted_count == 0
    assert coll.delete_many({"g": 1}).deleted_count == len([i for i in range(10, 30) if i % 3 == 1])
    assert coll.count_documents({"g": 1}) == 0


def test_sort_and_range_follow_bson_comparison_order(client, names):
    from bson.decimal128 import Decimal128
    from bson.max_key import MaxKey
    from bson.min_key import MinKey

    coll = client[names.db][names.coll]
    oid = ObjectId("5f0000000000000000000001")
    when = datetime.datetime(2020, 1, 1)
    ids = [MaxKey(), True, "b", oid, when, {"a": 1}, 2, Decimal128("1.25"), None, Int64(3), "a", 1.5,
           Binary(b"\x01", 0), MinKey(), False, Timestamp(5, 1)]
    coll.insert_many([{"_id": v} for v in ids])
    got = [d["_id"] for d in coll.find().sort("_id", 1).batch_size(4)]
    expected = [MinKey(), None, Decimal128("1.25"), 1.5, 2, Int64(3), "a", "b", {"a": 1}, b"\x01",
                oid, False, True, when, Timestamp(5, 1), MaxKey()]
    assert [bson_type(v) for v in got] == [bson_type(v) for v in expected]
    assert got == expected
    # comparison operators only match values of the same type bracket
    assert sorted(d["_id"] for d in coll.find({"_id": {"$gt": 1.4, "$lt": 100}})) == [1.5, 2, 3]
    assert [d["_id"] for d in coll.find({"_id": {"$gte": "a"}}).sort("_id", -1)] == ["b", "a"]


def bson_type(v):
    return type(v).__name__


def test_find_batch_size_uses_getmore(recorded, names):
    c, rec = recorded
    coll = c[names.db][names.coll]
    coll.insert_many([{"_id": i} for i in range(23)])
    rec.started_events.clear()
    rec.succeeded_events.clear()
    docs = list(coll.find({}, batch_size=5).sort("_id", 1))
    assert [d["_id"] for d in docs] == list(range(23))
    assert len(rec.cmds("find")) == 1 and rec.cmds("find")[0]["batchSize"] == 5
    first = rec.replies("find")[0]["cursor"]
    assert len(first["firstBatch"]) == 5
    assert isinstance(first["id"], Int64) and first["id"] != 0
    assert first["ns"] == f"{names.db}.{names.coll}"
    more = rec.replies("getMore")
    # 23 = 5 + 5 + 5 + 5 + 3: four getMores, the last one exhausts the cursor (id 0).
    assert [len(r["cursor"]["nextBatch"]) for r in more] == [5, 5, 5, 3]
    assert [r["cursor"]["id"] for r in more][-1] == 0
    assert all(r["cursor"]["id"] == first["id"] for r in more[:-1])
    assert all(isinstance(cmd["getMore"], Int64) and cmd["collection"] == names.coll for cmd in rec.cmds("getMore"))

    limited = list(coll.find({}).sort("_id", -1).limit(7).batch_size(3))
    assert [d["_id"] for d in limited] == list(range(22, 15, -1))


def test_kill_cursors_and_cursor_not_found(recorded, names):
    c, rec = recorded
    coll = c[names.db][names.coll]
    coll.insert_many([{"_id": i} for i in range(10)])
    cur = coll.find({}, batch_size=2)
    next(cur)
    cid = cur.cursor_id
    cur.close()
    assert rec.cmds("killCursors") and rec.cmds("killCursors")[-1]["cursors"] == [cid]
    with pytest.raises(OperationFailure) as ei:
        c[names.db].command({"getMore": Int64(cid), "collection": names.coll})
    assert ei.value.code == 43  # CursorNotFound


def test_bulk_write(client, names):
    coll = client[names.db][names.coll]
    coll.insert_one({"_id": 0, "n": 0})
    r = coll.bulk_write([
        InsertOne({"_id": 1, "n": 1}),
        InsertOne({"_id": 2, "n": 2}),
        UpdateOne({"_id": 1}, {"$set": {"x": 1}}),
        UpdateMany({}, {"$inc": {"n": 10}}),
        ReplaceOne({"_id": 2}, {"y": 2}),
        DeleteOne({"_id": 0}),
        UpdateOne({"_id": 3}, {"$set": {"z": 1}}, upsert=True),
    ])
    assert r.inserted_count == 2
    assert r.matched_count == 1 + 3 + 1
    assert r.modified_count == 1 + 3 + 1
    assert r.deleted_count == 1
    assert r.upserted_count == 1 and r.upserted_ids == {6: 3}
    assert list(coll.find().sort("_id", 1)) == [{"_id": 1, "n": 11, "x": 1}, {"_id": 2, "y": 2}, {"_id": 3, "z": 1}]


def test_duplicate_key_errors(client, names):
    coll = client[names.db][names.coll]
    coll.insert_one({"_id": 1, "email": "a@x"})
    with pytest.raises(DuplicateKeyError) as ei:
        coll.insert_one({"_id": 1})
    assert ei.value.code == 11000
    assert "E11000 duplicate key error" in ei.value.details["errmsg"]
    assert ei.value.details.get("keyPattern") == {"_id": 1}
    assert ei.value.details.get("keyValue") == {"_id": 1}

    coll.create_index("email", unique=True)
    with pytest.raises(DuplicateKeyError) as ei:
        coll.insert_one({"_id": 2, "email": "a@x"})
    assert ei.value.code == 11000 and ei.value.details.get("keyPattern") == {"email": 1}
    with pytest.raises(DuplicateKeyError):
        coll.update_one({"_id": 3}, {"$set": {"email": "a@x"}}, upsert=True)

    # a missing field is indexed as null: a second document without "email" is a duplicate too
    coll.insert_one({"_id": 4})
    with pytest.raises(DuplicateKeyError) as ei:
        coll.insert_one({"_id": 5})
    assert ei.value.details.get("keyValue") == {"email": None}

    plain = client[names.db][names.other]
    plain.insert_one({"_id": 1})
    with pytest.raises(BulkWriteError) as ei:
        plain.insert_many([{"_id": 10}, {"_id": 1}, {"_id": 11}])  # ordered: stops at the error
    d = ei.value.details
    assert d["nInserted"] == 1
    assert [(e["index"], e["code"]) for e in d["writeErrors"]] == [(1, 11000)]
    with pytest.raises(BulkWriteError) as ei:
        plain.insert_many([{"_id": 20}, {"_id": 1}, {"_id": 21}], ordered=False)
    assert ei.value.details["nInserted"] == 2
    assert sorted(doc["_id"] for doc in plain.find({}, {"_id": 1})) == [1, 10, 20, 21]


def test_count_documents_and_distinct(client, names):
    coll = client[names.db][names.coll]
    coll.insert_many([{"_id": i, "g": i % 4, "t": ["a", "b"] if i % 2 else ["c"]} for i in range(20)])
    assert coll.count_documents({}) == 20
    assert coll.count_documents({"g": 1}) == 5
    assert coll.count_documents({"g": {"$gte": 2}}, skip=3, limit=4) == 4
    assert coll.count_documents({"nope": 1}) == 0
    assert coll.estimated_document_count() == 20
    assert sorted(coll.distinct("g")) == [0, 1, 2, 3]
    assert sorted(coll.distinct("t")) == ["a", "b", "c"]
    assert client[names.db]["missing"].count_documents({}) == 0


def test_aggregate(client, names):
    coll = client[names.db][names.coll]
    coll.insert_many([{"_id": i, "g": "ab"[i % 2], "v": i, "items": [i, i + 1]} for i in range(10)])
    out = list(coll.aggregate([
        {"$match": {"v": {"$gte": 2}}},
        {"$group": {"_id": "$g", "total": {"$sum": "$v"}, "n": {"$sum": 1}, "max": {"$max": "$v"}}},
        {"$sort": {"_id": 1}},
    ]))
    assert out == [{"_id": "a", "total": 2 + 4 + 6 + 8, "n": 4, "max": 8}, {"_id": "b", "total": 3 + 5 + 7 + 9, "n": 4, "max": 9}]
    out = list(coll.aggregate([{"$sort": {"v": -1}}, {"$skip": 1}, {"$limit": 2}, {"$project": {"_id": 0, "v": 1, "w": {"$add": ["$v", 1]}}}]))
    assert out == [{"v": 8, "w": 9}, {"v": 7, "w": 8}]
    assert list(coll.aggregate([{"$unwind": "$items"}, {"$match": {"_id": 3}}, {"$project": {"items": 1}}])) == [
        {"_id": 3, "items": 3}, {"_id": 3, "items": 4}]
    assert list(coll.aggregate([{"$match": {"g": "a"}}, {"$count": "n"}])) == [{"n": 5}]
    big = list(coll.aggregate([{"$sort": {"_id": 1}}], batchSize=3))
    assert [d["_id"] for d in big] == list(range(10))


# ------------------------------------------------------------------------------------------------
# transactions


def _applyops_for(client, db):
    return oplog_entries(client, {"op": "c", "ns": "admin.$cmd", "o.applyOps.ns": {"$regex": f"^{db}\\."}})


def test_transaction_commit_writes_one_applyops_entry(client, names):
    db = client[names.db]
    db.create_collection("a")
    db.create_collection("b")
    db.b.insert_one({"_id": "acct", "balance": 10})
    seen_inside = {}

    def transfer(session):
        db.a.insert_one({"_id": 1, "amount": 5}, session=session)
        db.a.insert_one({"_id": 2, "amount": 6}, session=session)
        db.b.update_one({"_id": "acct"}, {"$inc": {"balance": -11}}, session=session)
        seen_inside["own"] = db.a.find_one({"_id": 1}, session=session)
        seen_inside["outside"] = db.a.find_one({"_id": 1})  # another session must not see it yet

    with client.start_session() as s:
        s.with_transaction(transfer)
        txn_lsid = s.session_id
    assert seen_inside["own"] == {"_id": 1, "amount": 5}
    assert seen_inside["outside"] is None
    assert sorted(d["_id"] for d in db.a.find()) == [1, 2]
    assert db.b.find_one({"_id": "acct"})["balance"] == -1

    entries = _applyops_for(client, names.db)
    assert len(entries) == 1, entries
    e = entries[0]
    ops = e["o"]["applyOps"]
    assert [(op["op"], op["ns"]) for op in ops] == [("i", f"{names.db}.a"), ("i", f"{names.db}.a"), ("u", f"{names.db}.b")]
    assert ops[0]["o"] == {"_id": 1, "amount": 5}
    assert ops[2]["o2"] == {"_id": "acct"}
    assert ops[2]["o"] == {"$v": 2, "diff": {"u": {"balance": -1}}}
    assert all(isinstance(op["ui"], Binary) and op["ui"].subtype == 4 for op in ops)
    assert e["lsid"]["id"] == txn_lsid["id"]
    assert isinstance(e["txnNumber"], Int64)
    assert isinstance(e["ts"], Timestamp) and isinstance(e["t"], Int64) and e["v"] == 2
    assert isinstance(e["wall"], datetime.datetime)
    assert "partialTxn" not in e and "partialTxn" not in e["o"]
    assert e["prevOpTime"] == {"ts": Timestamp(0, 0), "t": -1}  # a one-entry transaction
    # the transaction's writes appear only inside applyOps
    assert oplog_entries(client, {"ns": f"{names.db}.a"}) == []

    with client.start_session() as s:
        s.with_transaction(lambda sess: db.a.insert_one({"_id": 3}, session=sess))
    entries = _applyops_for(client, names.db)
    assert len(entries) == 2
    assert entries[1]["ts"] > entries[0]["ts"]


def test_large_transaction_is_split_into_several_applyops_entries(client, names):
    """Since 4.2 a transaction bigger than 16 MB is logged as several applyOps entries; all but
    the last are marked partialTxn. Change streams still return every operation."""
    db = client[names.db]
    db.create_collection("big")
    blob = "x" * (1024 * 1024)
    with db.big.watch() as stream:
        with client.start_session() as s:
            s.with_transaction(lambda sess: [db.big.insert_one({"_id": i, "blob": blob}, session=sess) for i in range(20)])
        evs = [next_event(stream, timeout=30) for _ in range(20)]
    assert [e["documentKey"]["_id"] for e in evs] == list(range(20))
    assert len({e["txnNumber"] for e in evs}) == 1

    entries = sorted(oplog_entries(client, {"op": "c", "o.applyOps.ns": f"{names.db}.big"}), key=lambda e: e["ts"])
    assert len(entries) >= 2, "a 20 MB transaction must not be logged as one entry"
    assert sum(len(e["o"]["applyOps"]) for e in entries) == 20
    # o: {applyOps: [...], partialTxn: true} on all but the last entry (mongod ApplyOpsCommandInfo)
    assert [e["o"].get("partialTxn", False) for e in entries] == [True] * (len(entries) - 1) + [False]
    assert all("partialTxn" not in e for e in entries)
    assert len({(e["txnNumber"], e["lsid"]["id"]) for e in entries}) == 1
    assert entries[0]["prevOpTime"] == {"ts": Timestamp(0, 0), "t": -1}
    for prev, cur in zip(entries, entries[1:]):
        assert cur["prevOpTime"] == {"ts": prev["ts"], "t": prev["t"]}
    assert all(len(bson.encode(e)) <= 16 * 1024 * 1024 + 16 * 1024 for e in entries)


def test_transaction_abort_writes_nothing(client, names):
    db = client[names.db]
    db.create_collection("a")

    class Boom(Exception):
        pass

    def failing(session):
        db.a.insert_one({"_id": 1}, session=session)
        raise Boom()

    with client.start_session() as s:
        with pytest.raises(Boom):
            s.with_transaction(failing)
        s.start_transaction()
        db.a.insert_one({"_id": 2}, session=s)
        assert db.a.find_one({"_id": 2}, session=s) == {"_id": 2}
        s.abort_transaction()
    assert list(db.a.find()) == []
    assert _applyops_for(client, names.db) == []
    assert oplog_entries(client, {"ns": f"{names.db}.a"}) == []


def test_transaction_write_conflict_is_transient(client, names):
    db = client[names.db]
    db.a.insert_one({"_id": 1, "v": 0})
    with client.start_session() as s1, client.start_session() as s2:
        s1.start_transaction()
        db.a.update_one({"_id": 1}, {"$set": {"v": 1}}, session=s1)
        s2.start_transaction()
        with pytest.raises(OperationFailure) as ei:
            db.a.update_one({"_id": 1}, {"$set": {"v": 2}}, session=s2)
        assert ei.value.code == 112  # WriteConflict
        assert ei.value.has_error_label("TransientTransactionError")
        s2.abort_transaction()
        s1.commit_transaction()
    assert db.a.find_one({"_id": 1}) == {"_id": 1, "v": 1}


# ------------------------------------------------------------------------------------------------
# change streams


def test_change_stream_event_shapes(client, names):
    coll = client[names.db][names.coll]
    client[names.db].create_collection(names.coll)
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    with coll.watch() as stream:
        coll.insert_one({"_id": 1, "a": 1, "arr": [1, 2], "sub": {"x": 1, "y": 2}})
        coll.update_one({"_id": 1}, {"$set": {"a": 2, "sub.x": 5}, "$unset": {"sub.y": ""}, "$push": {"arr": 3}})
        coll.replace_one({"_id": 1}, {"b": 1})
        coll.delete_one({"_id": 1})
        ins, upd, rep, dele = (next_event(stream) for _ in range(4))

    ns = {"db": names.db, "coll": names.coll}
    for e, op in zip((ins, upd, rep, dele), ("insert", "update", "replace", "delete")):
        assert e["operationType"] == op
        assert set(e["_id"]) == {"_data"} and isinstance(e["_id"]["_data"], str)
        assert isinstance(e["clusterTime"], Timestamp)
        assert isinstance(e["wallTime"], datetime.datetime)
        assert abs(e["wallTime"] - before) < datetime.timedelta(minutes=1)
        assert e["ns"] == ns
        assert e["documentKey"] == {"_id": 1}
        assert "lsid" not in e and "txnNumber" not in e
    assert ins["fullDocument"] == {"_id": 1, "a": 1, "arr": [1, 2], "sub": {"x": 1, "y": 2}}
    assert set(ins) == {"_id", "operationType", "clusterTime", "wallTime", "fullDocument", "ns", "documentKey"}
    assert "fullDocument" not in upd
    assert upd["updateDescription"] == {
        "updatedFields": {"a": 2, "sub.x": 5, "arr.2": 3},
        "removedFields": ["sub.y"],
        "truncatedArrays": [],
    }
    assert rep["fullDocument"] == {"_id": 1, "b": 1}
    assert "fullDocument" not in dele
    times = [e["clusterTime"] for e in (ins, upd, rep, dele)]
    assert times == sorted(times) and len(set(times)) == 4
    tokens = [e["_id"]["_data"] for e in (ins, upd, rep, dele)]
    assert tokens == sorted(tokens) and len(set(tokens)) == 4


def test_resume_token_encodes_cluster_time(client, names):
    coll = client[names.db][names.coll]
    with coll.watch(max_await_time_ms=50) as stream:
        coll.insert_one({"_id": 1})
        e = next_event(stream)
        assert token_ts(e["_id"]) == e["clusterTime"]
        stream.try_next()
        assert token_ts(stream.resume_token) >= e["clusterTime"]


def test_change_stream_array_truncation_and_pipeline_update(client, names):
    coll = client[names.db][names.coll]
    coll.insert_one({"_id": 1, "array": ["foo", {"a": "bar"}, 1, 2, 3], "keep": 1})
    with coll.watch() as stream:
        coll.update_one({"_id": 1}, [{"$set": {"array": ["foo", {"a": "bar"}]}}])
        coll.update_one({"_id": 1}, {"$set": {"array.1.a": "baz", "new.deep": 1}})
        e1, e2 = next_event(stream), next_event(stream)
    assert e1["operationType"] == "update"
    assert e1["updateDescription"] == {"updatedFields": {}, "removedFields": [],
                                       "truncatedArrays": [{"field": "array", "newSize": 2}]}
    assert e2["updateDescription"] == {"updatedFields": {"array.1.a": "baz", "new": {"deep": 1}},
                                       "removedFields": [], "truncatedArrays": []}


def test_change_stream_update_lookup(client, names):
    coll = client[names.db][names.coll]
    coll.insert_one({"_id": 1, "a": 1, "b": "x"})
    coll.insert_one({"_id": 2, "a": 1})
    with coll.watch(full_document="updateLookup") as stream:
        coll.update_one({"_id": 1}, {"$set": {"a": 2}})
        coll.update_one({"_id": 2}, {"$set": {"a": 2}})
        coll.delete_one({"_id": 2})  # the lookup happens when the event is read: already gone
        e1, e2 = next_event(stream), next_event(stream)
    assert e1["fullDocument"] == {"_id": 1, "a": 2, "b": "x"}
    assert e1["updateDescription"]["updatedFields"] == {"a": 2}
    assert e2["documentKey"] == {"_id": 2}
    assert "fullDocument" in e2 and e2["fullDocument"] is None


def test_change_stream_database_and_cluster_level(recorded, client, names):
    c, rec = recorded
    db = c[names.db]
    other_db = names.db + "_2"
    with db.watch() as dbs, c.watch([{"$match": {"ns.db": {"$in": [names.db, other_db]}}}]) as cls:
        client[other_db]["x"].insert_one({"_id": "o"})
        client[names.db]["c1"].insert_one({"_id": 1})
        client[names.db]["c2"].insert_one({"_id": 2})
        got = [next_event(dbs), next_event(dbs)]
        assert [(e["ns"]["coll"], e["documentKey"]["_id"]) for e in got] == [("c1", 1), ("c2", 2)]
        assert all(e["ns"]["db"] == names.db for e in got)
        allc = [next_event(cls) for _ in range(3)]
        assert [(e["ns"]["db"], e["ns"]["coll"]) for e in allc] == [(other_db, "x"), (names.db, "c1"), (names.db, "c2")]

    aggs = [r for r in rec.replies("aggregate")]
    assert f"{names.db}.$cmd.aggregate" in [r["cursor"]["ns"] for r in aggs]
    assert "admin.$cmd.aggregate" in [r["cursor"]["ns"] for r in aggs]
    assert all(isinstance(r["cursor"]["id"], Int64) and r["cursor"]["id"] != 0 for r in aggs)
    assert all("postBatchResumeToken" in r["cursor"] for r in aggs)
    collections = {cmd["collection"] for cmd in rec.cmds("getMore")}
    assert collections == {"$cmd.aggregate"}


def test_change_stream_transaction_events_carry_lsid_and_txn_number(client, names):
    coll = client[names.db][names.coll]
    client[names.db].create_collection(names.coll)
    with coll.watch() as stream:
        with client.start_session() as s:
            def work(sess):
                coll.insert_one({"_id": 1}, session=sess)
                coll.insert_one({"_id": 2}, session=sess)
                coll.update_one({"_id": 1}, {"$set": {"x": 1}}, session=sess)
            s.with_transaction(work)
            lsid = s.session_id
        coll.insert_one({"_id": 3})
        evs = [next_event(stream) for _ in range(4)]
    txn = evs[:3]
    assert [e["operationType"] for e in txn] == ["insert", "insert", "update"]
    assert all(e["lsid"]["id"] == lsid["id"] for e in txn)
    assert all(isinstance(e["txnNumber"], Int64) for e in txn)
    assert len({e["txnNumber"] for e in txn}) == 1
    assert len({e["clusterTime"] for e in txn}) == 1  # one applyOps entry, one timestamp
    tokens = [e["_id"]["_data"] for e in txn]
    assert tokens == sorted(tokens) and len(set(tokens)) == 3  # distinct by txnOpIndex
    assert "lsid" not in evs[3] and "txnNumber" not in evs[3]
    assert evs[3]["clusterTime"] > txn[0]["clusterTime"]


def test_resume_inside_a_transaction(client, names):
    coll = client[names.db][names.coll]
    client[names.db].create_collection(names.coll)
    with coll.watch() as stream:
        with client.start_session() as s:
            s.with_transaction(lambda sess: coll.insert_many([{"_id": i} for i in range(3)], session=sess))
        coll.insert_one({"_id": "after"})
        evs = [next_event(stream) for _ in range(4)]
    assert [e["documentKey"]["_id"] for e in evs] == [0, 1, 2, "after"]
    with coll.watch(resume_after=evs[0]["_id"]) as s2:  # resume between two ops of one applyOps
        assert [next_event(s2)["_id"] for _ in range(3)] == [e["_id"] for e in evs[1:]]
    with coll.watch(start_at_operation_time=evs[0]["clusterTime"]) as s3:
        assert [next_event(s3)["_id"] for _ in range(4)] == [e["_id"] for e in evs]


def test_change_events_agree_with_oplog(client, names):
    coll = client[names.db][names.coll]
    ns = f"{names.db}.{names.coll}"
    coll.insert_one({"_id": 1, "a": 1, "b": {"c": 1, "d": 2}, "arr": [1, 2, 3], "tags": ["x"]})
    with coll.watch() as stream:
        coll.update_one({"_id": 1}, {"$set": {"a": 1}})  # no-op: no oplog entry, no event
        coll.update_one({"_id": 1}, {"$set": {"a": 5, "b.c": 9, "tags.1": "y", "n": True}, "$unset": {"b.d": ""}})
        coll.update_one({"_id": 2}, {"$set": {"u": 1}}, upsert=True)  # an upsert is an insert
        coll.update_many({}, {"$inc": {"k": 1}})
        evs = [next_event(stream) for _ in range(4)]
    assert [e["operationType"] for e in evs] == ["update", "insert", "update", "update"]
    assert evs[0]["updateDescription"] == {
        "updatedFields": {"a": 5, "b.c": 9, "tags.1": "y", "n": True},
        "removedFields": ["b.d"],
        "truncatedArrays": [],
    }
    assert evs[1]["fullDocument"] == {"_id": 2, "u": 1}
    assert sorted(e["documentKey"]["_id"] for e in evs[2:]) == [1, 2]

    entries = oplog_entries(client, {"ns": ns, "op": {"$in": ["u", "i"]}, "ts": {"$gte": evs[0]["clusterTime"]}})
    assert [e["ts"] for e in entries] == [e["clusterTime"] for e in evs]
    assert [e["wall"] for e in entries] == [e["wallTime"] for e in evs]
    assert entries[0]["o"] == {"$v": 2, "diff": {"u": {"a": 5}, "i": {"n": True},
                                                 "sb": {"d": {"d": False}, "u": {"c": 9}},
                                                 "stags": {"a": True, "u1": "y"}}}
    assert entries[1]["op"] == "i" and entries[1]["o"] == {"_id": 2, "u": 1}


def test_retryable_writes_record_session_info_in_the_oplog(sim_uri, names):
    """pymongo retries writes by default: such oplog entries carry lsid/txnNumber/stmtId, yet
    their change events carry no lsid/txnNumber (those mark transactions only)."""
    ns = f"{names.db}.{names.coll}"
    retry = MongoClient(sim_uri, **CLIENT_GUARDS)
    plain = MongoClient(sim_uri, retryWrites=False, **CLIENT_GUARDS)
    try:
        with retry[names.db][names.coll].watch() as stream:
            retry[names.db][names.coll].insert_one({"_id": 1})
            plain[names.db][names.coll].insert_one({"_id": 2})
            evs = [next_event(stream), next_event(stream)]
        assert all("lsid" not in e and "txnNumber" not in e for e in evs)
        e1, e2 = oplog_entries(retry, {"ns": ns, "op": "i"})
        assert set(e1["lsid"]) >= {"id"} and isinstance(e1["txnNumber"], Int64) and e1["stmtId"] == 0
        assert e1["prevOpTime"] == {"ts": Timestamp(0, 0), "t": -1}
        assert "lsid" not in e2 and "txnNumber" not in e2 and "stmtId" not in e2
        # one retryable insert command of two documents: statements 0 and 1, chained by prevOpTime
        retry[names.db][names.other].insert_many([{"_id": 1}, {"_id": 2}])
        m1, m2 = oplog_entries(retry, {"ns": f"{names.db}.{names.other}", "op": "i"})
        assert (m1["stmtId"], m2["stmtId"]) == (0, 1)
        assert m1["txnNumber"] == m2["txnNumber"] and m1["lsid"] == m2["lsid"]
        assert m2["prevOpTime"] == {"ts": m1["ts"], "t": m1["t"]}
    finally:
        retry.close()
        plain.close()


def test_change_stream_getmore_waits_one_second_by_default(client, names):
    with client[names.db][names.coll].watch() as stream:
        t0 = time.monotonic()
        assert stream.try_next() is None
        elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed < 5, elapsed


def test_resume_after_start_after_start_at_operation_time(client, names):
    coll = client[names.db][names.coll]
    client[names.db].create_collection(names.coll)
    with coll.watch() as stream:
        coll.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 3}])
        e1, e2, e3 = (next_event(stream) for _ in range(3))
    assert e1["clusterTime"] < e2["clusterTime"] < e3["clusterTime"]

    with coll.watch(resume_after=e1["_id"]) as s:
        assert next_event(s)["_id"] == e2["_id"]
        assert next_event(s)["_id"] == e3["_id"]
    with coll.watch(start_after=e1["_id"]) as s:
        assert next_event(s) == e2
    with coll.watch(start_at_operation_time=e2["clusterTime"]) as s:
        assert next_event(s) == e2
    with coll.watch(resume_after=e3["_id"], max_await_time_ms=100) as s:
        assert s.try_next() is None
        coll.insert_one({"_id": 4})
        assert next_event(s)["documentKey"] == {"_id": 4}


def test_invalidate_then_start_after(client, names):
    coll = client[names.db][names.coll]
    coll.insert_one({"_id": 0})
    with coll.watch() as stream:
        coll.drop()
        drop, inval = next_event(stream), next_event(stream)
        assert drop["operationType"] == "drop" and drop["ns"] == {"db": names.db, "coll": names.coll}
        assert inval["operationType"] == "invalidate"
        assert "ns" not in inval
        assert not stream.alive  # the batch with invalidate closed the cursor (id 0)
    with pytest.raises(OperationFailure) as ei:
        coll.watch(resume_after=inval["_id"]).try_next()
    assert ei.value.code == 260  # InvalidResumeToken: resumeAfter an invalidate is not allowed
    with coll.watch(start_after=inval["_id"]) as s:
        coll.insert_one({"_id": 1})
        e = next_event(s)
    assert e["operationType"] == "insert" and e["documentKey"] == {"_id": 1}


def test_auto_resume_after_connection_closed_on_getmore(recorded, client, names):
    c, rec = recorded
    coll = c[names.db][names.coll]
    client[names.db].create_collection(names.coll)
    with coll.watch() as stream:
        with FailPoint(client, mode={"times": 1}, data={"failCommands": ["getMore"], "closeConnection": True}):
            client[names.db][names.coll].insert_many([{"_id": 1}, {"_id": 2}])
            got = [next_event(stream)["documentKey"]["_id"], next_event(stream)["documentKey"]["_id"]]
    assert got == [1, 2]
    aggs = rec.cmds("aggregate")
    assert len(aggs) == 2
    resumed = aggs[1]["pipeline"][0]["$changeStream"]
    assert "resumeAfter" in resumed or "startAtOperationTime" in resumed


def test_auto_resume_after_resumable_error_label(recorded, client, names):
    c, rec = recorded
    coll = c[names.db][names.coll]
    client[names.db].create_collection(names.coll)
    with coll.watch() as stream:
        with FailPoint(client, mode={"times": 1},
                       data={"failCommands": ["getMore"], "errorCode": 50, "errorLabels": ["ResumableChangeStreamError"]}):
            client[names.db][names.coll].insert_one({"_id": 1})
            assert next_event(stream)["documentKey"] == {"_id": 1}
    failed = [e for e in rec.failed_events if e.command_name == "getMore"]
    assert len(failed) == 1 and failed[0].failure["code"] == 50
    assert "ResumableChangeStreamError" in failed[0].failure.get("errorLabels", [])
    assert len(rec.cmds("aggregate")) == 2


def test_server_labels_resumable_errors_itself(recorded, client, names):
    c, rec = recorded
    coll = c[names.db][names.coll]
    client[names.db].create_collection(names.coll)
    with coll.watch() as stream:
        # HostUnreachable (6) is a NetworkError: the server itself must add ResumableChangeStreamError
        # (contrast test_no_resume_for_unlabelled_error, where failCommand's own labels win).
        with FailPoint(client, "failGetMoreAfterCursorCheckout", mode={"times": 1}, data={"errorCode": 6}):
            client[names.db][names.coll].insert_one({"_id": 1})
            assert next_event(stream)["documentKey"] == {"_id": 1}
    failed = [e for e in rec.failed_events if e.command_name == "getMore"]
    assert failed and failed[0].failure["code"] == 6
    assert "ResumableChangeStreamError" in failed[0].failure.get("errorLabels", [])
    assert len(rec.cmds("aggregate")) == 2


def test_resume_after_the_cursor_is_killed_elsewhere(recorded, client, names):
    c, rec = recorded
    client[names.db].create_collection(names.coll)
    with c[names.db][names.coll].watch(max_await_time_ms=100) as stream:
        assert stream.try_next() is None
        cid = rec.replies("aggregate")[0]["cursor"]["id"]
        killed = client[names.db].command({"killCursors": names.coll, "cursors": [cid]})
        assert killed["cursorsKilled"] == [cid]
        client[names.db][names.coll].insert_one({"_id": 1})
        assert next_event(stream)["documentKey"] == {"_id": 1}
    failed = [e.failure["code"] for e in rec.failed_events if e.command_name == "getMore"]
    assert failed == [43]  # CursorNotFound, always resumable
    assert len(rec.cmds("aggregate")) == 2


def test_no_resume_for_unlabelled_error(recorded, client, names):
    c, rec = recorded
    coll = c[names.db][names.coll]
    client[names.db].create_collection(names.coll)
    with coll.watch() as stream:
        with FailPoint(client, mode={"times": 1}, data={"failCommands": ["getMore"], "errorCode": 6, "closeConnection": False}):
            client[names.db][names.coll].insert_one({"_id": 1})
            with pytest.raises(OperationFailure) as ei:
                next_event(stream)
    assert ei.value.code == 6
    assert not ei.value.has_error_label("ResumableChangeStreamError")
    assert len(rec.cmds("aggregate")) == 1


def test_fail_command_block_connection_app_name_and_times(sim_uri, client, names):
    tagged = MongoClient(sim_uri, appname="sim-py-tagged", **CLIENT_GUARDS)
    try:
        coll = tagged[names.db][names.coll]
        coll.insert_one({"_id": 1})
        with FailPoint(client, mode={"times": 2},
                       data={"failCommands": ["find"], "blockConnection": True, "blockTimeMS": 300,
                             "appName": "sim-py-tagged"}):
            t0 = time.monotonic()
            assert client[names.db][names.coll].find_one({"_id": 1}) == {"_id": 1}  # other appName
            assert time.monotonic() - t0 < 0.25
            for _ in range(2):
                t0 = time.monotonic()
                assert coll.find_one({"_id": 1}) == {"_id": 1}
                assert time.monotonic() - t0 >= 0.28
            t0 = time.monotonic()
            coll.find_one({"_id": 1})  # times: 2 used up
            assert time.monotonic() - t0 < 0.25
        with FailPoint(client, mode="alwaysOn", data={"failCommands": ["insert"], "errorCode": 2,
                                                       "appName": "sim-py-tagged"}):
            for _ in range(2):
                with pytest.raises(OperationFailure) as ei:
                    coll.insert_one({"_id": 2})
                assert ei.value.code == 2
            client[names.db][names.coll].insert_one({"_id": 3})  # another appName is not affected
        coll.insert_one({"_id": 2})  # mode off again
        assert sorted(d["_id"] for d in coll.find()) == [1, 2, 3]
    finally:
        tagged.close()


def test_post_batch_resume_token_advances_while_idle(recorded, client, names):
    c, rec = recorded
    coll = c[names.db][names.coll]
    client[names.db].create_collection(names.coll)
    with coll.watch(max_await_time_ms=300) as stream:
        t0 = time.monotonic()
        assert stream.try_next() is None
        assert time.monotonic() - t0 >= 0.25, "getMore did not wait for maxTimeMS (awaitData)"
        tok1 = stream.resume_token
        assert tok1 is not None and isinstance(tok1["_data"], str)
        client[names.db][names.other].insert_one({"unrelated": True})  # not visible on this stream

        def advanced():
            assert stream.try_next() is None
            return stream.resume_token != tok1

        wait_until(advanced, "postBatchResumeToken to advance past an unrelated write")
        tok2 = stream.resume_token
        assert tok2["_data"] > tok1["_data"]
        coll.insert_one({"_id": 1})
        e = next_event(stream)
        assert e["_id"]["_data"] > tok2["_data"]
    # a high-water-mark token is a valid resume point (checkpoints may hold one)
    with c[names.db][names.coll].watch(resume_after=tok2, max_await_time_ms=100) as again:
        assert next_event(again)["_id"] == e["_id"]
    gm = rec.replies("getMore")
    assert gm and all("postBatchResumeToken" in r["cursor"] for r in gm)
    ids = {r["cursor"]["id"] for r in gm}
    assert len(ids) == 1 and 0 not in ids
    assert all(cmd.get("maxTimeMS") == 300 for cmd in rec.cmds("getMore"))


def test_cluster_stream_sees_ddl_without_invalidate(client, names):
    db = client[names.db]
    db.a.insert_one({"_id": 1})
    db.b.insert_one({"_id": 1})
    only_here = [{"$match": {"$or": [{"ns.db": names.db}, {"to.db": names.db}]}}]
    with client.watch(only_here, full_document="updateLookup") as stream:
        db.a.update_one({"_id": 1}, {"$set": {"x": 1}})
        evs = [next_event(stream)]  # read before the rename: the lookup happens at read time
        db.a.rename("a2")
        db.b.drop()
        client.drop_database(names.db)
        db.c.insert_one({"_id": 9})  # the cluster stream continues after dropDatabase
        evs += [next_event(stream) for _ in range(5)]
    kinds = [(e["operationType"], e["ns"].get("coll")) for e in evs]
    assert kinds == [("update", "a"), ("rename", "a"), ("drop", "b"), ("drop", "a2"),
                     ("dropDatabase", None), ("insert", "c")], kinds
    assert evs[0]["fullDocument"] == {"_id": 1, "x": 1}
    assert evs[1]["to"] == {"db": names.db, "coll": "a2"}
    assert evs[4]["ns"] == {"db": names.db}
    assert all(e["operationType"] != "invalidate" for e in evs)


def test_cluster_stream_namespace_filter(client, names):
    """The shape of filter a deployment-level consumer uses: mapped namespaces, renames onto
    them, and dropDatabase of their databases."""
    db = names.db
    match = {"$match": {"$or": [
        {"ns.db": db, "ns.coll": {"$in": ["m1", "m2"]}},
        {"operationType": "rename", "to.db": db, "to.coll": {"$in": ["m1", "m2"]}},
        {"operationType": "dropDatabase", "ns.db": {"$in": [db]}},
    ]}}
    client[db].tmp.insert_one({"_id": "t"})
    with client.watch([match]) as stream:
        client[db].m1.insert_one({"_id": 1})
        client[db].unmapped.insert_one({"_id": 2})
        client[db + "_x"].m1.insert_one({"_id": 3})
        client[db].m2.insert_one({"_id": 4})
        client[db].tmp.rename("m2", dropTarget=True)
        client.drop_database(db)
        evs = [next_event(stream) for _ in range(6)]
    got = [(e["operationType"], e["ns"].get("coll"), e.get("documentKey", {}).get("_id")) for e in evs]
    assert got[:3] == [("insert", "m1", 1), ("insert", "m2", 4), ("rename", "tmp", None)], got
    # dropDatabase: one drop per (matching) collection, in no particular order, then dropDatabase
    assert sorted(got[3:5]) == [("drop", "m1", None), ("drop", "m2", None)], got
    assert got[5] == ("dropDatabase", None, None), got
    assert evs[2]["to"] == {"db": db, "coll": "m2"}


def test_database_stream_drop_database_invalidates(client, names):
    db = client[names.db]
    db.a.insert_one({"_id": 1})
    with db.watch() as stream:
        client.drop_database(names.db)
        evs = [next_event(stream) for _ in range(3)]
        assert [e["operationType"] for e in evs] == ["drop", "dropDatabase", "invalidate"]
        assert not stream.alive


# ------------------------------------------------------------------------------------------------
# oplog


def _tail_until(cursor, pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while cursor.alive and time.monotonic() < deadline:
        try:
            doc = cursor.next()
        except StopIteration:
            continue
        if pred(doc):
            return doc
    raise AssertionError("no matching oplog entry")


def test_oplog_tailing_with_tailable_await_cursor(client, names):
    coll = client[names.db][names.coll]
    ns = f"{names.db}.{names.coll}"
    coll.insert_one({"_id": 1, "a": 1, "b": 1})
    [first] = oplog_entries(client, {"ns": ns, "op": "i"})
    newest = client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])
    oldest = client.local["oplog.rs"].find_one({}, sort=[("$natural", 1)])
    assert newest == first  # the last write is the newest entry
    assert oldest["ts"] < first["ts"]
    cursor = client.local["oplog.rs"].find({"ts": {"$gte": first["ts"]}}, cursor_type=CursorType.TAILABLE_AWAIT)
    cursor.max_await_time_ms(200)
    ins = _tail_until(cursor, lambda d: d.get("ns") == ns)
    assert ins == first
    assert ins["op"] == "i" and ins["o"] == {"_id": 1, "a": 1, "b": 1}
    assert isinstance(ins["ts"], Timestamp) and isinstance(ins["t"], Int64)
    assert ins["v"] == 2 and isinstance(ins["v"], Int64)
    assert isinstance(ins["wall"], datetime.datetime)
    assert isinstance(ins["ui"], Binary) and ins["ui"].subtype == 4

    coll.update_one({"_id": 1}, {"$set": {"a": 2, "n.x": 1}, "$unset": {"b": ""}})
    coll.replace_one({"_id": 1}, {"r": 1})
    coll.delete_one({"_id": 1})
    upd = _tail_until(cursor, lambda d: d.get("ns") == ns)
    rep = _tail_until(cursor, lambda d: d.get("ns") == ns)
    dele = _tail_until(cursor, lambda d: d.get("ns") == ns)
    assert upd["op"] == "u" and upd["o2"] == {"_id": 1}
    assert upd["o"] == {"$v": 2, "diff": {"d": {"b": False}, "u": {"a": 2}, "i": {"n": {"x": 1}}}}
    assert list(upd["o"]["diff"]) == ["d", "u", "i"]  # the server writes the sections in this order
    assert rep["op"] == "u" and rep["o"] == {"_id": 1, "r": 1} and rep["o2"] == {"_id": 1}
    assert dele["op"] == "d" and dele["o"] == {"_id": 1}
    assert ins["ts"] < upd["ts"] < rep["ts"] < dele["ts"]

    # awaitData: an empty getMore keeps the cursor alive and waits; later writes still arrive
    t0 = time.monotonic()
    with pytest.raises(StopIteration):
        while True:
            d = cursor.next()
            assert d.get("ns") != ns
    assert cursor.alive and time.monotonic() - t0 >= 0.15
    client[names.db].command({"create": "later"})
    cmd = _tail_until(cursor, lambda d: d.get("op") == "c" and d.get("ns") == f"{names.db}.$cmd")
    assert cmd["o"].get("create") == "later"

    # DDL is written as "c" entries on <db>.$cmd
    client[names.db]["later"].rename("later2")
    client[names.db]["later2"].drop()
    client.drop_database(names.db)
    ddl = [_tail_until(cursor, lambda d: d.get("op") == "c" and d.get("ns") == f"{names.db}.$cmd") for _ in range(2)]
    assert ddl[0]["o"] == {"renameCollection": f"{names.db}.later", "to": f"{names.db}.later2", "stayTemp": False}
    assert ddl[1]["o"] == {"drop": "later2"}
    dropdb = _tail_until(cursor, lambda d: d.get("op") == "c" and d.get("o", {}).get("dropDatabase") == 1)
    assert dropdb["ns"] == f"{names.db}.$cmd"
    cursor.close()


def test_capped_position_lost_and_history_lost(start_sim):
    uri = start_sim("--oplog-max-entries", "20")
    rec = CommandRecorder()
    c = MongoClient(uri, event_listeners=[rec], **CLIENT_GUARDS)
    try:
        coll = c.db.coll
        oplog = c.local["oplog.rs"]
        with coll.watch() as stream:
            coll.insert_one({"_id": 0})
            first = next_event(stream)
        tail = oplog.find({"ts": {"$gte": first["clusterTime"]}}, cursor_type=CursorType.TAILABLE_AWAIT, batch_size=1)
        assert tail.next()["ts"] == first["clusterTime"]

        for i in range(1, 51):
            coll.insert_one({"_id": i})
        assert oplog.count_documents({}) <= 20
        assert oplog.find_one({"ts": first["clusterTime"]}) is None  # rolled off

        # pymongo swallows CappedPositionLost on tailable cursors and just marks the cursor dead
        assert list(tail) == [] and not tail.alive
        failed = [e for e in rec.failed_events if e.command_name == "getMore"]
        assert [e.failure["code"] for e in failed] == [136]  # CappedPositionLost

        for kwargs in ({"resume_after": first["_id"]}, {"start_at_operation_time": first["clusterTime"]}):
            with pytest.raises(OperationFailure) as ei:
                with coll.watch(max_await_time_ms=100, **kwargs) as s:
                    s.try_next()
            assert ei.value.code == 286, kwargs  # ChangeStreamHistoryLost
            assert not ei.value.has_error_label("ResumableChangeStreamError")
    finally:
        c.close()
