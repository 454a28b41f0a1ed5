"""pymongo 4 against mongo-sim: the `$out` and `$merge` stages (written through the ordinary
write path) and `explain` of a find (a collection-scan plan with the match count)."""

from __future__ import annotations

import pytest
from pymongo.cursor import CursorType
from pymongo.errors import OperationFailure


def test_out_replaces_the_target_with_the_results(client, names):
    db = client[names.db]
    db.src.insert_many([{"_id": 1, "x": 11}, {"_id": 2, "x": 22}, {"_id": 3, "x": 33}])
    db.dst.insert_one({"_id": 9})
    got = list(db.src.aggregate([{"$match": {"_id": {"$gt": 1}}}, {"$out": "dst"}]))
    assert got == []
    assert list(db.dst.find()) == [{"_id": 2, "x": 22}, {"_id": 3, "x": 33}]
    with pytest.raises(OperationFailure) as e:
        list(db.src.aggregate([{"$out": "dst"}, {"$match": {}}]))
    assert e.value.code == 40601


def test_merge_merges_by_id_and_honours_when_matched(client, names):
    db = client[names.db]
    db.src.insert_many([{"_id": 1, "x": 1}, {"_id": 2, "x": 2}])
    db.dst.insert_one({"_id": 1, "y": "kept"})
    db.src.aggregate([{"$merge": {"into": "dst"}}])
    assert list(db.dst.find()) == [{"_id": 1, "y": "kept", "x": 1}, {"_id": 2, "x": 2}]
    db.src.aggregate([{"$merge": {"into": "dst", "whenMatched": "replace"}}])
    assert db.dst.find_one({"_id": 1}) == {"_id": 1, "x": 1}
    with pytest.raises(OperationFailure) as e:
        db.src.aggregate([{"$merge": {"into": "dst", "on": "x"}}])
    assert "not supported by mongo-sim" in str(e.value)


def test_explain_of_a_find_reports_a_plan_and_counts(client, names):
    coll = client[names.db].c
    coll.insert_many([{"x": i % 3} for i in range(9)])
    plan = coll.find({"x": 1}).explain()
    assert plan["queryPlanner"]["winningPlan"]["stage"] == "COLLSCAN"
    assert plan["executionStats"]["nReturned"] == 3
    assert plan["executionStats"]["totalDocsExamined"] == 9


def test_tailable_cursor_honours_skip_and_limit(client, names):
    coll = client[names.db].create_collection("capped", capped=True, size=4096, max=3)
    coll.insert_many([{"x": i} for i in range(4, 7)])
    cursor = coll.find(cursor_type=CursorType.TAILABLE)
    assert [d["x"] for d in cursor[1:3]] == [5, 6]
    assert coll.find(cursor_type=CursorType.TAILABLE)[0]["x"] == 4
