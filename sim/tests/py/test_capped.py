"""pymongo 4 against mongo-sim: capped user collections, `$natural` order and tailable cursors,
as MongoDB 7.0 answers them (oldest documents go once over `max` or `size`, each with its own
`d` oplog entry; `$natural` is insertion order; a tailable cursor stays alive after an empty
first batch when the collection has records, `shouldSaveCursor`).
"""

from __future__ import annotations

import threading

import pytest
from pymongo import ASCENDING
from pymongo.cursor import CursorType
from pymongo.errors import OperationFailure

from conftest import wait_until


def xs(docs):
    return [d["x"] for d in docs]


def test_capped_max_keeps_the_newest_and_logs_the_deletes(client, names):
    db = client[names.db]
    coll = db.create_collection("capped", capped=True, size=4096, max=3)
    opts = coll.options()
    assert opts["capped"] is True and opts["max"] == 3
    for i in range(1, 6):
        coll.insert_one({"_id": 10 - i, "x": i})
    assert xs(coll.find()) == [3, 4, 5]
    assert coll.count_documents({}) == 3
    deleted = [
        e["o"]["_id"]
        for e in client.local["oplog.rs"].find({"ns": f"{names.db}.capped", "op": "d"})
    ]
    assert deleted == [9, 8]


def test_capped_size_removes_the_oldest_by_bytes(client, names):
    coll = client[names.db].create_collection("bysize", capped=True, size=4096)
    pad = "p" * 1000
    for i in range(10):
        coll.insert_one({"x": i, "pad": pad})
    got = xs(coll.find())
    # About 1 KB each in 4096 bytes: the newest three, in insertion order.
    assert got == [7, 8, 9]
    with pytest.raises(OperationFailure) as e:
        coll.insert_one({"x": 99, "pad": "p" * 5000})
    assert e.value.code == 2 and "cappedMaxSize" in str(e.value)


def test_natural_order_is_insertion_order_both_ways(client, names):
    coll = client[names.db].plain
    coll.insert_many([{"_id": 3, "x": 1}, {"_id": 1, "x": 2}, {"_id": 2, "x": 3}])
    coll.update_one({"_id": 3}, {"$set": {"y": "grown" * 10}})
    assert [d["_id"] for d in coll.find().sort("$natural", ASCENDING)] == [3, 1, 2]
    assert [d["_id"] for d in coll.find().sort("$natural", -1)] == [2, 1, 3]
    assert [d["_id"] for d in coll.find().hint([("$natural", -1)])] == [2, 1, 3]
    # Without a sort, an ordinary collection still answers in `_id` order here.
    assert [d["_id"] for d in coll.find()] == [1, 2, 3]


def test_tailable_on_a_non_capped_collection_is_refused(client, names):
    coll = client[names.db].plain
    coll.insert_one({"x": 1})
    with pytest.raises(OperationFailure) as e:
        coll.find(cursor_type=CursorType.TAILABLE).to_list()
    assert e.value.code == 2 and "tailable cursor requested on non capped collection" in str(e.value)


def test_tailable_cursor_follows_inserts_and_survives_an_empty_first_batch(client, names):
    db = client[names.db]
    coll = db.create_collection("tail", capped=True, size=100000)
    # An empty collection: the cursor is dead at once (no records to stand on).
    reply = db.command({"find": "tail", "filter": {}, "tailable": True})
    assert reply["cursor"]["id"] == 0
    coll.insert_one({"x": 1})
    # Records but no match: an empty first batch and a live cursor (shouldSaveCursor).
    reply = db.command({"find": "tail", "filter": {"x": 2}, "tailable": True, "awaitData": True})
    assert reply["cursor"]["firstBatch"] == []
    cursor_id = reply["cursor"]["id"]
    assert cursor_id != 0
    threading.Timer(0.3, lambda: coll.insert_many([{"x": 3}, {"x": 2}])).start()
    batch = []

    def more():
        r = db.command({"getMore": cursor_id, "collection": "tail", "maxTimeMS": 5000})
        assert r["cursor"]["id"] == cursor_id
        batch.extend(r["cursor"]["nextBatch"])
        return batch

    wait_until(more, "the awaitData getMore returning the new match", timeout=20)
    assert xs(batch) == [2]


def test_tailable_cursor_dies_when_its_position_is_capped_away(client, names):
    coll = client[names.db].create_collection("roll", capped=True, size=4096, max=3)
    coll.insert_one({"x": 1})
    cursor = coll.find(cursor_type=CursorType.TAILABLE)
    assert xs(cursor.to_list()) == [1]
    assert cursor.alive
    coll.insert_many([{"x": i} for i in range(2, 6)])
    # Its last record (x: 1) is gone: 136 CappedPositionLost, which pymongo takes as the end.
    assert cursor.to_list() == []
    assert not cursor.alive
    with pytest.raises(OperationFailure) as e:
        client[names.db].command({"find": "roll", "sort": {"x": 1}, "tailable": True})
    assert e.value.code == 2


def test_capped_collection_refuses_writes_in_a_transaction(client, names):
    coll = client[names.db].create_collection("txcap", capped=True, size=4096)
    with client.start_session() as s:
        with pytest.raises(OperationFailure) as e:
            with s.start_transaction():
                coll.insert_one({"x": 1}, session=s)
    assert e.value.code == 263
