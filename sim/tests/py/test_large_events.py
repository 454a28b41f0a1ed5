"""pymongo 4 (unchanged) against mongo-sim: the 16 MB limits and $changeStreamSplitLargeEvent.

Expected values are what a MongoDB 7.0 replica set returns: an event over 16 MiB fails the
getMore with 10334 BSONObjectTooLarge; with the split stage it comes as fragments
{_id, splitEvent: {fragment, of}, ...} (server change_stream_split_event_helpers.cpp), and a
fragment's resume token resumes after that fragment.
"""

from __future__ import annotations

import pytest
from pymongo.errors import OperationFailure, WriteError

MIB = 1024 * 1024
SPLIT = [{"$changeStreamSplitLargeEvent": {}}]


def large_update(coll):
    """A 15 MiB document whose 2 MiB field is replaced: its updateLookup event is ~17 MiB."""
    coll.insert_one({"_id": 1, "blob": "b" * (13 * MIB), "note": "n" * (2 * MIB)})
    coll.update_one({"_id": 1}, {"$set": {"note": "m" * (2 * MIB)}})
    coll.insert_one({"_id": 2})


def test_update_growth_over_16_mib_is_17419(client, names):
    coll = client[names.db][names.coll]
    coll.insert_one({"_id": 1, "a": "x" * (9 * MIB)})
    with pytest.raises(WriteError) as e:
        coll.update_one({"_id": 1}, {"$set": {"b": "y" * (8 * MIB)}})
    assert e.value.code == 17419


def test_event_over_16_mib_fails_with_10334(client, names):
    coll = client[names.db][names.coll]
    with coll.watch(full_document="updateLookup", max_await_time_ms=200) as stream:
        large_update(coll)
        with pytest.raises(OperationFailure) as e:
            for _ in range(5):
                stream.try_next()
        assert e.value.code == 10334
        assert "First element: _id: { _data: " in str(e.value)


def test_split_fragments_and_resume_from_a_fragment(client, names):
    coll = client[names.db][names.coll]
    opts = dict(full_document="updateLookup", max_await_time_ms=200)
    with coll.watch(SPLIT, **opts) as stream:
        large_update(coll)
        events = []
        while len(events) < 4:
            e = stream.try_next()
            if e is not None:
                events.append(e)
    insert, first, second, after = events
    assert "splitEvent" not in insert
    assert first["splitEvent"] == {"fragment": 1, "of": 2}
    assert second["splitEvent"] == {"fragment": 2, "of": 2}
    assert first["operationType"] == "update"
    assert "updateDescription" in first and "fullDocument" not in first
    assert list(second) == ["_id", "splitEvent", "fullDocument"]
    assert after["documentKey"] == {"_id": 2}
    with coll.watch(SPLIT, resume_after=first["_id"], **opts) as resumed:
        got = None
        while got is None:
            got = resumed.try_next()
        assert got["_id"] == second["_id"]
        assert got["splitEvent"] == {"fragment": 2, "of": 2}
