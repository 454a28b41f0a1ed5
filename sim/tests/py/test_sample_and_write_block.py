"""pymongo 4 against mongo-sim: the `$sample` stage and `setUserWriteBlockMode`, as MongoDB 7.0
answers them.

`$sample` tests share the simulator (each in its own database). Write blocking is server-wide,
so those tests run a private simulator each (`start_sim`), never the shared one.
"""

from __future__ import annotations

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure, WriteError

from conftest import CLIENT_GUARDS

BLOCKED = 371


def ids(docs):
    return [d["_id"] for d in docs]


def distinct(docs):
    """The `_id`s of `docs` as a set, after checking none came back twice."""
    found = ids(docs)
    assert len(set(found)) == len(found), f"a document came back twice: {found}"
    return set(found)


# ------------------------------------------------------------------------------------------------
# $sample


def test_sample_returns_size_distinct_documents_at_random(client, names):
    coll = client[names.db][names.coll]
    coll.insert_many([{"_id": i, "even": i % 2 == 0} for i in range(10)])
    combos, firsts, seen = set(), set(), set()
    for _ in range(200):
        got = list(coll.aggregate([{"$sample": {"size": 3}}]))
        assert len(got) == 3
        picked = distinct(got)
        assert picked <= set(range(10))
        combos.add(frozenset(picked))
        firsts.add(got[0]["_id"])
        seen |= picked
    # 200 draws of 3 out of 10: every document shows up, also in first place, in many combinations.
    assert seen == set(range(10))
    assert firsts == set(range(10))
    assert len(combos) > 30
    # More than there is: everything, once each, in a shuffled order.
    orders = set()
    for _ in range(5):
        got = list(coll.aggregate([{"$sample": {"size": 50}}]))
        assert distinct(got) == set(range(10))
        orders.add(tuple(ids(got)))
    assert len(orders) > 1


def test_sample_of_a_big_collection_takes_distinct_random_documents(client, names):
    # More than 100 documents and a size of at most 5%: mongod's random-cursor path, which may
    # draw a record twice but never returns it twice.
    coll = client[names.db][names.coll]
    coll.insert_many([{"_id": i} for i in range(2500)])
    runs, union = set(), set()
    for size in (40, 125):  # 125 is exactly 5%
        for _ in range(5):
            got = list(coll.aggregate([{"$sample": {"size": size}}]))
            assert len(got) == size
            picked = distinct(got)
            runs.add(frozenset(picked))
            union |= picked
    assert len(runs) == 10, "two samples picked the same documents"
    assert len(union) > 500
    # Past 5% it is a random sort; same contract.
    got = list(coll.aggregate([{"$sample": {"size": 400}}], batchSize=7))
    assert len(distinct(got)) == 400


def test_sample_with_stages_before_and_after(client, names):
    coll = client[names.db][names.coll]
    coll.insert_many([{"_id": i, "n": i, "even": i % 2 == 0} for i in range(300)])
    got = list(
        coll.aggregate(
            [{"$sample": {"size": 10}}, {"$match": {"even": True}}, {"$project": {"n": 1}}]
        )
    )
    assert len(got) <= 10
    distinct(got)
    assert all(set(d) == {"_id", "n"} and d["n"] % 2 == 0 for d in got)
    for _ in range(20):
        got = list(coll.aggregate([{"$match": {"n": {"$lt": 6}}}, {"$sample": {"size": 4}}]))
        assert len(got) == 4 and all(i < 6 for i in distinct(got))
    got = list(coll.aggregate([{"$match": {"n": {"$lt": 2}}}, {"$sample": {"size": 5}}]))
    assert distinct(got) == {0, 1}
    assert list(coll.aggregate([{"$sample": {"size": 12}}, {"$count": "k"}])) == [{"k": 12}]


@pytest.mark.parametrize(
    "stage, code, message",
    [
        ({"$sample": 5}, 28745, "the $sample stage specification must be an object"),
        ({"$sample": {"size": "5"}}, 28746, "size argument to $sample must be a number"),
        ({"$sample": {"size": 0}}, 28747, "size argument to $sample must be a positive integer"),
        ({"$sample": {"size": -3}}, 28747, "size argument to $sample must be a positive integer"),
        ({"$sample": {"size": 1, "seed": 4}}, 28748, "unrecognized option to $sample: seed"),
        ({"$sample": {}}, 28749, "$sample stage must specify a size"),
    ],
)
def test_sample_errors_are_mongods(client, names, stage, code, message):
    coll = client[names.db][names.coll]
    coll.insert_one({"_id": 1})
    for pipeline in ([stage], [{"$match": {}}, stage]):
        with pytest.raises(OperationFailure) as e:
            list(coll.aggregate(pipeline))
        assert e.value.code == code
        assert e.value.details["errmsg"] == message
        assert e.value.details["codeName"] == f"Location{code}"


# ------------------------------------------------------------------------------------------------
# setUserWriteBlockMode


def set_blocked(client, on):
    assert client.admin.command({"setUserWriteBlockMode": 1, "global": on})["ok"] == 1.0


def block_mode(client):
    return client.admin.command("serverStatus")["repl"]["userWriteBlockMode"]


def assert_blocked(what, call):
    with pytest.raises(OperationFailure) as e:
        call()
    assert e.value.code == BLOCKED, f"{what}: {e.value.details}"
    assert "User writes blocked" in str(e.value), what


def test_write_block_refuses_user_writes_everywhere_until_lifted(start_sim):
    uri = start_sim()
    a = MongoClient(uri, **CLIENT_GUARDS)
    b = MongoClient(uri, **CLIENT_GUARDS)
    try:
        coll = a.shop.orders
        coll.insert_many([{"_id": 1, "v": 1}, {"_id": 2, "v": 2}])
        assert block_mode(a) == 1
        set_blocked(b, True)
        assert block_mode(a) == 2
        stream = coll.watch(max_await_time_ms=200)

        # insert_one raises WriteError, an OperationFailure, code 371.
        with pytest.raises(WriteError) as e:
            coll.insert_one({"_id": 3})
        assert e.value.code == BLOCKED and e.value.details["errmsg"] == "User writes blocked"
        assert_blocked("update", lambda: coll.update_one({"_id": 1}, {"$set": {"v": 9}}))
        assert_blocked("delete", lambda: coll.delete_one({"_id": 1}))
        assert_blocked("replace", lambda: coll.replace_one({"_id": 1}, {}))
        assert_blocked(
            "findAndModify", lambda: coll.find_one_and_update({"_id": 1}, {"$inc": {"v": 1}})
        )
        assert_blocked("create", lambda: a.shop.create_collection("fresh"))
        assert_blocked("drop", lambda: coll.drop())
        assert_blocked("dropDatabase", lambda: a.drop_database("shop"))
        assert_blocked("createIndexes", lambda: coll.create_index("v"))
        assert_blocked("rename", lambda: coll.rename("renamed"))

        # Writes that change nothing are no writes; internal databases stay writable.
        assert coll.update_one({"_id": 42}, {"$set": {"v": 1}}).matched_count == 0
        assert coll.delete_many({"_id": 42}).deleted_count == 0
        for name in ("admin", "config", "local"):
            a[name].probe.insert_one({"_id": 1})
            a[name].probe.delete_one({"_id": 1})

        # Reads and change streams go on.
        assert [d["_id"] for d in coll.find().sort("_id", 1)] == [1, 2]
        assert len(list(coll.aggregate([{"$sample": {"size": 1}}]))) == 1
        assert stream.try_next() is None

        # Lifted: writes pass again, and the stream sees them (not the refused ones).
        set_blocked(a, False)
        assert block_mode(b) == 1
        coll.insert_one({"_id": 3})
        event = None
        for _ in range(50):
            event = stream.try_next()
            if event is not None:
                break
        assert event is not None and event["documentKey"] == {"_id": 3}
        assert coll.count_documents({}) == 3
    finally:
        a.close()
        b.close()


def test_write_block_refuses_transactions(start_sim):
    uri = start_sim()
    client = MongoClient(uri, **CLIENT_GUARDS)
    try:
        coll = client.shop.orders
        coll.insert_one({"_id": 0})

        # Written before the block, committed after it: refused, nothing lands.
        with client.start_session() as early:
            early.start_transaction()
            coll.insert_one({"_id": 1}, session=early)
            set_blocked(client, True)
            assert_blocked("commit", early.commit_transaction)
        assert coll.find_one({"_id": 1}) is None

        # A write inside a transaction fails at once; reads inside one work.
        with client.start_session() as s:
            s.start_transaction()
            assert coll.find_one({"_id": 0}, session=s) == {"_id": 0}
            assert_blocked("insert in a transaction", lambda: coll.insert_one({"_id": 2}, session=s))
            s.abort_transaction()

            # Unblocked, the same session commits.
            set_blocked(client, False)
            s.start_transaction()
            coll.insert_one({"_id": 3}, session=s)
            s.commit_transaction()
        assert sorted(ids(coll.find())) == [0, 3]
    finally:
        client.close()


def test_write_block_command_arguments(start_sim):
    uri = start_sim()
    client = MongoClient(uri, **CLIENT_GUARDS)
    try:
        for cmd, code in (
            ({"setUserWriteBlockMode": 1}, 40414),
            ({"setUserWriteBlockMode": 1, "global": 1}, 14),
            ({"setUserWriteBlockMode": 1, "global": True, "reason": "x"}, 40415),
        ):
            with pytest.raises(OperationFailure) as e:
                client.admin.command(cmd)
            assert e.value.code == code, cmd
        assert block_mode(client) == 1
    finally:
        client.close()
