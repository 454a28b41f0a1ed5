"""Unit checks of the unified-format matcher and runOnRequirements logic (no server needed).

The examples are the ones the unified test format spec gives under "Evaluating Matches".
"""

from __future__ import annotations

import datetime

import pytest
from bson import json_util
from bson.binary import Binary
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from unified_matcher import Matcher, MatchError, bson_type_name
from unified_runner import ServerInfo, requirements_failure, parse_version

M = Matcher(entity_lookup={"oid0": ObjectId("5f0000000000000000000000")}.__getitem__,
            lsid_lookup={"session0": {"id": Binary(b"\x01" * 16, 4)}}.__getitem__)


def ok(expected, actual, root=True):
    M.match(expected, actual, root=root)


def bad(expected, actual, root=True):
    with pytest.raises(MatchError):
        M.match(expected, actual, root=root)


def test_root_document_allows_extra_fields_nested_does_not():
    ok({"x": 1}, {"x": 1, "y": 1})
    bad({"x": 1, "y": 1}, {"x": 1})
    bad({"x": {"y": 1}}, {"x": {"y": 1, "z": 1}})
    bad({"x": 1}, {"x": 1, "y": 1}, root=False)


def test_key_order_is_ignored():
    ok({"x": 1, "y": {"a": 1, "b": 2}}, {"y": {"b": 2, "a": 1}, "x": 1})


def test_arrays_same_length_and_elements_not_root():
    ok([1, 2, 3], [1, 2, 3])
    bad([1, 2, 3], [1, 2, 3, 4])
    bad([1, 2], [2, 1])
    bad([{"x": 1}], [{"x": 1, "y": 1}])  # array elements are not root documents
    bad([1], {"0": 1})


def test_flexible_numerics_but_not_bool_or_string():
    ok({"ok": 1}, {"ok": 1.0})
    ok({"n": Int64(5)}, {"n": 5})
    ok({"n": 5}, {"n": Int64(5)})
    bad({"ok": 1}, {"ok": 1.5})
    bad({"ok": 1}, {"ok": True})
    bad({"ok": True}, {"ok": 1})
    bad({"x": "1"}, {"x": 1})
    bad({"x": None}, {"x": 0})


def test_exists():
    ok({"a": {"$$exists": True}}, {"a": None})
    bad({"a": {"$$exists": True}}, {"b": 1})
    ok({"a": {"$$exists": False}}, {"b": 1})
    bad({"a": {"$$exists": False}}, {"a": 1})
    # inside a nested document the operator still works, and the key counts as expected
    ok({"c": {"a": {"$$exists": True}, "b": 1}}, {"c": {"a": 2, "b": 1}})
    bad({"c": {"a": {"$$exists": False}}}, {"c": {"x": 1}})  # x is an extra nested field


def test_type():
    ok({"a": {"$$type": "int"}}, {"a": 1})
    ok({"a": {"$$type": "long"}}, {"a": Int64(1)})
    bad({"a": {"$$type": "int"}}, {"a": Int64(1)})
    ok({"a": {"$$type": ["int", "long"]}}, {"a": Int64(1)})
    ok({"a": {"$$type": "string"}}, {"a": "s"})
    ok({"a": {"$$type": "object"}}, {"a": {"anything": [1]}})
    ok({"a": {"$$type": "array"}}, {"a": [{"x": 1}]})
    ok({"a": {"$$type": "timestamp"}}, {"a": Timestamp(1, 2)})
    ok({"a": {"$$type": "date"}}, {"a": datetime.datetime(2020, 1, 1)})
    ok({"a": {"$$type": "binData"}}, {"a": Binary(b"x", 4)})
    ok({"a": {"$$type": "objectId"}}, {"a": ObjectId()})
    ok({"a": {"$$type": "bool"}}, {"a": False})
    bad({"a": {"$$type": "int"}}, {"a": True})
    bad({"a": {"$$type": "string"}}, {})  # must exist
    assert bson_type_name(2**40) == "long"


def test_unset_or_matches():
    ok({"a": {"$$unsetOrMatches": 2}}, {})
    ok({"a": {"$$unsetOrMatches": 2}}, {"a": 2})
    bad({"a": {"$$unsetOrMatches": 2}}, {"a": 3})
    # as used by the change-stream tests
    exp = {"truncatedArrays": {"$$unsetOrMatches": {"$$exists": True}}}
    ok(exp, {})
    ok(exp, {"truncatedArrays": []})
    # does not make a nested document root-level
    bad({"a": {"$$unsetOrMatches": {"x": 1}}}, {"a": {"x": 1, "y": 2}})
    # whole-result form
    ok({"$$unsetOrMatches": {"insertedId": 1}}, None)
    ok({"$$unsetOrMatches": {"insertedId": 1}}, {"insertedId": 1, "extra": True})


def test_matches_entity_and_session_lsid_and_lte():
    ok({"_id": {"$$matchesEntity": "oid0"}}, {"_id": ObjectId("5f0000000000000000000000")})
    bad({"_id": {"$$matchesEntity": "oid0"}}, {"_id": ObjectId()})
    ok({"lsid": {"$$sessionLsid": "session0"}}, {"lsid": {"id": Binary(b"\x01" * 16, 4)}})
    bad({"lsid": {"$$sessionLsid": "session0"}}, {"lsid": {"id": Binary(b"\x02" * 16, 4)}})
    ok({"n": {"$$lte": 5}}, {"n": 5.0})
    bad({"n": {"$$lte": 1}}, {"n": 1.1})


def test_match_as_document_and_root_and_hex():
    ok({"c": {"$$matchAsDocument": {"x": 1}}}, {"c": '{"x": 1}'})
    bad({"c": {"$$matchAsDocument": {"x": 1}}}, {"c": '{"x": 1, "y": 2}'})
    ok({"c": {"$$matchAsDocument": {"$$matchAsRoot": {"x": 1}}}}, {"c": '{"x": 1, "y": 2}'})
    ok({"c": {"$$matchAsRoot": {"x": 1}}}, {"c": {"x": 1, "y": 2}})
    ok({"b": {"$$matchesHexBytes": "12ab"}}, {"b": b"\x12\xab"})
    bad({"b": {"$$matchesHexBytes": "12ab"}}, {"b": b"\x12"})


def test_spec_style_change_event_expectation():
    expected = json_util.loads(
        '{"operationType": "update", "ns": {"db": "d", "coll": "c"},'
        ' "updateDescription": {"updatedFields": {}, "removedFields": [],'
        ' "truncatedArrays": [{"field": "array", "newSize": 2}],'
        ' "disambiguatedPaths": {"$$unsetOrMatches": {"$$exists": true}}}}'
    )
    actual = {
        "_id": {"_data": "8263"}, "operationType": "update", "clusterTime": Timestamp(1, 1),
        "ns": {"db": "d", "coll": "c"}, "documentKey": {"_id": 1},
        "updateDescription": {"updatedFields": {}, "removedFields": [],
                              "truncatedArrays": [{"field": "array", "newSize": 2}]},
    }
    ok(expected, actual)
    actual["updateDescription"]["truncatedArrays"][0]["newSize"] = 3
    bad(expected, actual)
    actual["updateDescription"]["truncatedArrays"][0]["newSize"] = 2
    actual["ns"]["extra"] = 1
    bad(expected, actual)


def test_run_on_requirements():
    rs7 = ServerInfo(version="7.0.14", topology="replicaset")
    assert requirements_failure(None, rs7) is None
    assert requirements_failure([{"minServerVersion": "3.6", "topologies": ["replicaset"]}], rs7) is None
    assert requirements_failure([{"maxServerVersion": "4.2.99"}], rs7) == "maxServerVersion 4.2.99 < 7.0.14"
    assert requirements_failure([{"minServerVersion": "8.1.0"}], rs7) == "minServerVersion 8.1.0 > 7.0.14"
    assert requirements_failure([{"topologies": ["sharded"]}], rs7) == "requires sharded topology"
    assert requirements_failure([{"topologies": ["single"]}], rs7) == "requires single topology"
    assert requirements_failure([{"serverless": "forbid"}], rs7) is None
    assert requirements_failure([{"serverless": "require"}], rs7) == "requires serverless"
    assert requirements_failure([{"auth": True}], rs7) == "requires auth"
    assert requirements_failure([{"csfle": True}], rs7) == "requires csfle"
    # any one requirement suffices
    two = [{"minServerVersion": "6.1.0", "maxServerVersion": "6.9"}, {"minServerVersion": "7.0", "topologies": ["replicaset"]}]
    assert requirements_failure(two, rs7) is None
    # versions compare component-wise, missing components are 0: "7.0" means 7.0.0
    assert requirements_failure([{"maxServerVersion": "7.0"}], rs7) == "maxServerVersion 7.0 < 7.0.14"
    assert requirements_failure([{"maxServerVersion": "7.0.99"}], rs7) is None
    assert parse_version("4.2.99") == (4, 2, 99)
    assert parse_version("7.0.14-rc1") == (7, 0, 14)
