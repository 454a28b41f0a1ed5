"""Value matching for the MongoDB unified test format ("Evaluating Matches").

Implements the rules of mongodb/specifications `source/unified-test-format/unified-test-format.md`:
extra fields are allowed only in root-level documents, arrays must have the same length, numbers
compare flexibly (int32 / int64 / double, never bool, never Decimal128), key order is ignored, and
the special operators `$$exists`, `$$type`, `$$unsetOrMatches`, `$$matchesEntity`,
`$$sessionLsid`, `$$lte`, `$$matchesHexBytes`, `$$matchAsDocument` and `$$matchAsRoot`.

`match(expected, actual)` raises `MatchError` (an AssertionError) naming the path that differs.
Nothing here talks to a server, so it is unit-tested on its own (test_unified_matcher.py).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any, Callable, Optional

from bson import json_util
from bson.binary import Binary
from bson.code import Code
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

try:  # pymongo >= 4.3
    from bson.datetime_ms import DatetimeMS
except ImportError:  # pragma: no cover
    DatetimeMS = datetime.datetime  # type: ignore

import uuid

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class MatchError(AssertionError):
    pass


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def bson_type_name(v: Any) -> str:
    """The `$type` alias of a decoded BSON value (as pymongo decodes it)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, Int64):
        return "long"
    if isinstance(v, int):
        return "int" if _INT32_MIN <= v <= _INT32_MAX else "long"
    if isinstance(v, float):
        return "double"
    if isinstance(v, Decimal128):
        return "decimal"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (Mapping, DBRef)):  # a DBRef is a document on the wire
        return "object"
    if isinstance(v, (list, tuple)):
        return "array"
    if isinstance(v, (bytes, Binary, uuid.UUID)):
        return "binData"
    if isinstance(v, ObjectId):
        return "objectId"
    if isinstance(v, (datetime.datetime, DatetimeMS)):
        return "date"
    if isinstance(v, (Regex, re.Pattern)):
        return "regex"
    if isinstance(v, Code):
        return "javascriptWithScope" if v.scope is not None else "javascript"
    if isinstance(v, Timestamp):
        return "timestamp"
    if isinstance(v, MinKey):
        return "minKey"
    if isinstance(v, MaxKey):
        return "maxKey"
    return type(v).__name__


def _type_matches(alias: str, v: Any) -> bool:
    name = bson_type_name(v)
    if alias == "number":
        return name in ("int", "long", "double", "decimal")
    return alias == name


def _operator(v: Any) -> Optional[str]:
    """The `$$op` name if v is a document whose first and only key starts with `$$`."""
    if isinstance(v, Mapping) and len(v) == 1:
        key = next(iter(v))
        if isinstance(key, str) and key.startswith("$$"):
            return key
    return None


def _fmt(v: Any) -> str:
    try:
        s = json_util.dumps(v, json_options=json_util.RELAXED_JSON_OPTIONS)
    except Exception:
        s = repr(v)
    return s if len(s) <= 400 else s[:400] + "..."


class Matcher:
    """Evaluates matches; `entities` resolves `$$matchesEntity` / `$$sessionLsid` names."""

    def __init__(
        self,
        entity_lookup: Optional[Callable[[str], Any]] = None,
        lsid_lookup: Optional[Callable[[str], Any]] = None,
    ):
        self._entity = entity_lookup
        self._lsid = lsid_lookup

    # -- public --------------------------------------------------------------------------------
    def match(self, expected: Any, actual: Any, root: bool = True, path: str = "$") -> None:
        op = _operator(expected)
        if op is not None:
            self._special(op, expected[op], actual, root, path)
            return

        if isinstance(expected, Mapping):
            if not isinstance(actual, Mapping):
                raise MatchError(f"{path}: expected a document {_fmt(expected)}, got {_fmt(actual)}")
            for key, value in expected.items():
                kpath = f"{path}.{key}"
                kop = _operator(value)
                if kop == "$$exists":
                    want = bool(value[kop])
                    if want and key not in actual:
                        raise MatchError(f"{kpath}: expected the field to exist; actual {_fmt(actual)}")
                    if not want and key in actual:
                        raise MatchError(f"{kpath}: expected no such field, got {_fmt(actual[key])}")
                    continue
                if kop == "$$unsetOrMatches":
                    if key not in actual:
                        continue
                    self.match(value[kop], actual[key], root=False, path=kpath)
                    continue
                if key not in actual:
                    raise MatchError(f"{kpath}: missing; expected {_fmt(value)}; actual document {_fmt(actual)}")
                self.match(value, actual[key], root=False, path=kpath)
            if not root:
                extra = [k for k in actual.keys() if k not in expected]
                if extra:
                    raise MatchError(f"{path}: unexpected extra field(s) {extra} in nested document {_fmt(actual)}")
            return

        if isinstance(expected, (list, tuple)):
            if not isinstance(actual, (list, tuple)):
                raise MatchError(f"{path}: expected an array {_fmt(expected)}, got {_fmt(actual)}")
            if len(actual) != len(expected):
                raise MatchError(
                    f"{path}: expected {len(expected)} element(s) {_fmt(expected)}, got {len(actual)}: {_fmt(actual)}"
                )
            for i, (e, a) in enumerate(zip(expected, actual)):
                self.match(e, a, root=False, path=f"{path}[{i}]")
            return

        self._scalar(expected, actual, path)

    def matches(self, expected: Any, actual: Any, root: bool = True) -> bool:
        try:
            self.match(expected, actual, root=root)
            return True
        except MatchError:
            return False

    # -- helpers -------------------------------------------------------------------------------
    def _scalar(self, expected: Any, actual: Any, path: str) -> None:
        if _is_number(expected) or _is_number(actual):
            if not (_is_number(expected) and _is_number(actual)) or expected != actual:
                raise MatchError(f"{path}: expected {_fmt(expected)}, got {_fmt(actual)}")
            return
        if isinstance(expected, bool) or isinstance(actual, bool):
            if type(expected) is not type(actual) or expected != actual:
                raise MatchError(f"{path}: expected {_fmt(expected)}, got {_fmt(actual)}")
            return
        e, a = expected, actual
        # Binary subtype 0 decodes to bytes; compare binaries by (subtype, bytes).
        if isinstance(e, (bytes, Binary)) and isinstance(a, (bytes, Binary)):
            es = getattr(e, "subtype", 0)
            as_ = getattr(a, "subtype", 0)
            if es != as_ or bytes(e) != bytes(a):
                raise MatchError(f"{path}: expected {_fmt(expected)}, got {_fmt(actual)}")
            return
        if isinstance(e, uuid.UUID) and isinstance(a, Binary):
            a = a.as_uuid() if a.subtype == 4 else a
        if isinstance(e, datetime.datetime) and isinstance(a, datetime.datetime):
            if e.tzinfo is None:
                e = e.replace(tzinfo=datetime.timezone.utc)
            if a.tzinfo is None:
                a = a.replace(tzinfo=datetime.timezone.utc)
        if bson_type_name(e) != bson_type_name(a) or e != a:
            raise MatchError(f"{path}: expected {_fmt(expected)}, got {_fmt(actual)}")

    def _special(self, op: str, arg: Any, actual: Any, root: bool, path: str) -> None:
        if op == "$$type":
            aliases = arg if isinstance(arg, list) else [arg]
            if not any(_type_matches(t, actual) for t in aliases):
                raise MatchError(f"{path}: expected $$type {aliases}, got {bson_type_name(actual)} {_fmt(actual)}")
        elif op == "$$exists":
            # Only meaningful as a field value; reached here for a root value: it exists.
            if not arg:
                raise MatchError(f"{path}: $$exists false used outside a document")
        elif op == "$$unsetOrMatches":
            # Reached for a whole value (a field is handled in match()): None means "no result".
            if actual is None:
                return
            self.match(arg, actual, root=root, path=path)
        elif op == "$$matchesEntity":
            if self._entity is None:
                raise MatchError(f"{path}: $$matchesEntity without an entity map")
            self.match(self._entity(arg), actual, root=root, path=path)
        elif op == "$$sessionLsid":
            if self._lsid is None:
                raise MatchError(f"{path}: $$sessionLsid without an entity map")
            self.match(self._lsid(arg), actual, root=False, path=path)
        elif op == "$$lte":
            if not (_is_number(arg) and _is_number(actual)) or not actual <= arg:
                raise MatchError(f"{path}: expected a number <= {arg}, got {_fmt(actual)}")
        elif op == "$$matchesHexBytes":
            if not isinstance(arg, str) or len(arg) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", arg):
                raise ValueError(f"malformed $$matchesHexBytes {arg!r}")
            data = bytes(actual) if isinstance(actual, (bytes, Binary)) else None
            if data is None and isinstance(actual, str):
                data = actual.encode("latin-1")
            if data is None or data.hex().lower() != arg.lower():
                raise MatchError(f"{path}: expected bytes {arg}, got {_fmt(actual)}")
        elif op == "$$matchAsDocument":
            if not isinstance(actual, str):
                raise MatchError(f"{path}: $$matchAsDocument needs an Extended JSON string, got {_fmt(actual)}")
            self.match(arg, json_util.loads(actual), root=False, path=path)
        elif op == "$$matchAsRoot":
            self.match(arg, actual, root=True, path=path)
        else:
            raise ValueError(f"unsupported special operator {op}")
