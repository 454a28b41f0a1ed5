"""A small runner for the MongoDB unified test format, enough for the change-stream spec tests.

Spec: mongodb/specifications `source/unified-test-format/unified-test-format.md`. Implemented: entity
creation (client with observeEvents / ignoreCommandMonitoringEvents / useMultipleMongoses /
uriOptions, database, collection, session), initialData, the operations the change-stream files
use (plus a few neighbours), expectResult / expectError, expectEvents (command started, succeeded
and failed events), outcome, runOnRequirements and skipReason. Matching lives in
unified_matcher.py. The driver under test is pymongo, used unchanged through its public API.

Test files are read where they are (never copied into the repository).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import pymongo
from bson import SON, json_util
from bson.json_util import JSONOptions
from pymongo import MongoClient, monitoring
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    InvalidOperation,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
)
from pymongo.write_concern import WriteConcern

from unified_matcher import Matcher, MatchError

SUPPORTED_SCHEMA = (1, 21)
# Guards so that a simulator that stops answering fails a test instead of hanging the suite.
CLIENT_GUARDS = {"serverSelectionTimeoutMS": 10000, "socketTimeoutMS": 30000, "connectTimeoutMS": 10000}
ITERATE_DEADLINE_S = 15.0

_SENSITIVE = {
    "authenticate", "saslstart", "saslcontinue", "getnonce", "createuser", "updateuser",
    "copydbgetnonce", "copydbsaslstart", "copydb",
}


class UnifiedSkip(Exception):
    """The test cannot run here; str(e) is the reason (one reason per skip class)."""


class UnifiedFailure(AssertionError):
    pass


# ------------------------------------------------------------------------------------------------
# Loading


@dataclasses.dataclass
class SpecCase:
    file_id: str          # e.g. "unified/change-streams.json"
    file: Dict[str, Any]  # whole parsed file
    test: Dict[str, Any]  # one element of file["tests"]

    @property
    def id(self) -> str:
        return f"{self.file_id}::{self.test['description']}"


def load_json(path: str) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json_util.loads(fh.read(), json_options=JSONOptions(tz_aware=False))


def collect_cases(root: str, subdirs=("unified", "related")) -> List[SpecCase]:
    cases = []
    for sub in subdirs:
        for path in sorted(glob.glob(os.path.join(root, sub, "*.json"))):
            spec = load_json(path)
            file_id = f"{sub}/{os.path.basename(path)}"
            for test in spec["tests"]:
                cases.append(SpecCase(file_id, spec, test))
    return cases


# ------------------------------------------------------------------------------------------------
# Server facts and runOnRequirements


def parse_version(s: str) -> Tuple[int, ...]:
    parts = []
    for p in str(s).split("."):
        m = re.match(r"\d+", p)
        if not m:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def _cmp_version(a: Tuple[int, ...], b: Tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a = a + (0,) * (n - len(a))
    b = b + (0,) * (n - len(b))
    return (a > b) - (a < b)


@dataclasses.dataclass
class ServerInfo:
    version: str
    topology: str  # single | replicaset | sharded | load-balanced
    auth: bool = False
    serverless: bool = False

    @classmethod
    def probe(cls, client: MongoClient) -> "ServerInfo":
        hello = client.admin.command("hello")
        version = client.admin.command("buildInfo")["version"]
        if hello.get("msg") == "isdbgrid":
            topo = "sharded"
        elif hello.get("setName"):
            topo = "replicaset"
        else:
            topo = "single"
        return cls(version=version, topology=topo)


def requirement_failure(req: Dict[str, Any], server: ServerInfo, client: Optional[MongoClient] = None) -> Optional[str]:
    """None when the runOnRequirement is met, else the reason it is not."""
    v = parse_version(server.version)
    if "minServerVersion" in req and _cmp_version(v, parse_version(req["minServerVersion"])) < 0:
        return f"minServerVersion {req['minServerVersion']} > {server.version}"
    if "maxServerVersion" in req and _cmp_version(v, parse_version(req["maxServerVersion"])) > 0:
        return f"maxServerVersion {req['maxServerVersion']} < {server.version}"
    topos = req.get("topologies")
    if topos:
        ok = server.topology in topos or (server.topology == "sharded" and "sharded-replicaset" in topos)
        if not ok:
            return f"requires {' or '.join(topos)} topology"
    sl = req.get("serverless")
    if sl == "require" and not server.serverless:
        return "requires serverless"
    if sl == "forbid" and server.serverless:
        return "forbids serverless"
    if req.get("auth") is True and not server.auth:
        return "requires auth"
    if req.get("auth") is False and server.auth:
        return "requires no auth"
    if "authMechanism" in req:
        return f"requires auth mechanism {req['authMechanism']}"
    if req.get("csfle") is True:
        return "requires csfle"
    params = req.get("serverParameters")
    if params:
        for name, want in params.items():
            try:
                got = client.admin.command({"getParameter": 1, name: 1}).get(name) if client else None
            except PyMongoError:
                got = None
            if got is None or not Matcher().matches(want, got, root=False):
                return f"requires server parameter {name}={want}"
    return None


def requirements_failure(reqs: Optional[List[Dict[str, Any]]], server: ServerInfo, client=None) -> Optional[str]:
    if not reqs:
        return None
    reasons = []
    for r in reqs:
        why = requirement_failure(r, server, client)
        if why is None:
            return None
        if why not in reasons:
            reasons.append(why)
    return "; ".join(reasons)


def driver_skip_reason(case: SpecCase) -> Optional[str]:
    """Skips caused by the driver (pymongo), not the server. Same choices as pymongo's own runner."""
    for op in case.test["operations"]:
        args = op.get("arguments", {}) or {}
        if "timeoutMS" in args or "timeoutMode" in args:
            return "pymongo does not implement CSOT (timeoutMS) for change streams (pymongo's runner skips these too)"
    for ent in case.file.get("createEntities", []):
        if "timeoutMS" in ent.get("client", {}).get("uriOptions", {}):
            return "pymongo does not implement CSOT (timeoutMS) for change streams (pymongo's runner skips these too)"
    return None


# ------------------------------------------------------------------------------------------------
# Events


class EventRecorder(monitoring.CommandListener):
    def __init__(self, observe: List[str], ignore: List[str], observe_sensitive: bool = False):
        self.observe = set(observe)
        self.ignore = {c.lower() for c in ignore} | {"configurefailpoint"}
        self.observe_sensitive = observe_sensitive
        self.events: List[Tuple[str, Any]] = []
        self.enabled = True
        self._lock = threading.Lock()

    def _skip(self, name: str, command: Optional[dict]) -> bool:
        lname = name.lower()
        if lname in self.ignore:
            return True
        if not self.observe_sensitive:
            if lname in _SENSITIVE:
                return True
            if lname in ("hello", "ismaster") and command is not None and (
                not command or "speculativeAuthenticate" in command
            ):
                return True
        return False

    def _add(self, kind: str, event) -> None:
        if self.enabled and kind in self.observe:
            with self._lock:
                self.events.append((kind, event))

    def started(self, event):
        if not self._skip(event.command_name, event.command):
            self._add("commandStartedEvent", event)

    def succeeded(self, event):
        if not self._skip(event.command_name, None):
            self._add("commandSucceededEvent", event)

    def failed(self, event):
        if not self._skip(event.command_name, None):
            self._add("commandFailedEvent", event)


# ------------------------------------------------------------------------------------------------
# Result coercion


def coerce_result(result: Any) -> Any:
    from pymongo.results import BulkWriteResult, DeleteResult, InsertManyResult, InsertOneResult, UpdateResult

    if isinstance(result, InsertOneResult):
        return {"insertedId": result.inserted_id}
    if isinstance(result, InsertManyResult):
        return {"insertedIds": {str(i): v for i, v in enumerate(result.inserted_ids)}}
    if isinstance(result, UpdateResult):
        return {
            "matchedCount": result.matched_count,
            "modifiedCount": result.modified_count,
            "upsertedCount": 0 if result.upserted_id is None else 1,
            "upsertedId": result.upserted_id,
        }
    if isinstance(result, DeleteResult):
        return {"deletedCount": result.deleted_count}
    if isinstance(result, BulkWriteResult):
        return {
            "deletedCount": result.deleted_count,
            "insertedCount": result.inserted_count,
            "matchedCount": result.matched_count,
            "modifiedCount": result.modified_count,
            "upsertedCount": result.upserted_count,
            "upsertedIds": {str(k): v for k, v in result.upserted_ids.items()},
        }
    return result


_CS_ARGS = {
    "pipeline": "pipeline",
    "batchSize": "batch_size",
    "fullDocument": "full_document",
    "fullDocumentBeforeChange": "full_document_before_change",
    "resumeAfter": "resume_after",
    "startAfter": "start_after",
    "startAtOperationTime": "start_at_operation_time",
    "maxAwaitTimeMS": "max_await_time_ms",
    "comment": "comment",
    "showExpandedEvents": "show_expanded_events",
    "collation": "collation",
}


def _map_args(args: Dict[str, Any], table: Dict[str, str], op: str) -> Dict[str, Any]:
    out = {}
    for k, v in args.items():
        if k not in table:
            raise UnifiedFailure(f"{op}: unsupported argument {k!r}")
        out[table[k]] = v
    return out


# ------------------------------------------------------------------------------------------------
# The runner


class UnifiedTestRunner:
    def __init__(self, case: SpecCase, uri: str, server: ServerInfo, internal: MongoClient):
        self.case = case
        self.uri = uri
        self.server = server
        self.internal = internal
        self.entities: Dict[str, Any] = {}
        self.listeners: Dict[str, EventRecorder] = {}
        self.clients: List[MongoClient] = []
        self.failpoints: List[Tuple[MongoClient, str]] = []
        self.streams: List[Any] = []
        self.matcher = Matcher(self._entity, self._lsid)
        self.session_lsids: Dict[str, Any] = {}

    # -- entities ----------------------------------------------------------------------------
    def _entity(self, name: str) -> Any:
        if name not in self.entities:
            raise UnifiedFailure(f"no entity named {name!r}")
        return self.entities[name]

    def _lsid(self, name: str) -> Any:
        if name not in self.session_lsids:
            raise UnifiedFailure(f"no session entity named {name!r}")
        return self.session_lsids[name]

    def _store(self, name: str, value: Any) -> None:
        if name in self.entities:
            raise UnifiedFailure(f"entity {name!r} already exists")
        self.entities[name] = value

    def _create_entities(self, specs: List[Dict[str, Any]]) -> None:
        for spec in specs:
            if len(spec) != 1:
                raise UnifiedFailure(f"entity {spec} must have exactly one key")
            kind, s = next(iter(spec.items()))
            if kind == "client":
                known = {"id", "uriOptions", "useMultipleMongoses", "observeEvents",
                         "ignoreCommandMonitoringEvents", "observeSensitiveCommands"}
                unknown = set(s) - known
                if unknown:
                    raise UnifiedFailure(f"client entity: unsupported option(s) {sorted(unknown)}")
                rec = EventRecorder(s.get("observeEvents", []), s.get("ignoreCommandMonitoringEvents", []),
                                    s.get("observeSensitiveCommands", False))
                opts = dict(CLIENT_GUARDS)
                opts.update(s.get("uriOptions", {}))
                # useMultipleMongoses only matters for sharded / load-balanced topologies.
                client = MongoClient(self.uri, event_listeners=[rec], **opts)
                self.clients.append(client)
                self.listeners[s["id"]] = rec
                self._store(s["id"], client)
            elif kind == "database":
                client = self._entity(s["client"])
                if not isinstance(client, MongoClient):
                    raise UnifiedFailure(f"{s['client']} is not a client")
                self._store(s["id"], client.get_database(s["databaseName"], **self._coll_opts(s.get("databaseOptions"))))
            elif kind == "collection":
                db = self._entity(s["database"])
                if not isinstance(db, pymongo.database.Database):
                    raise UnifiedFailure(f"{s['database']} is not a database")
                self._store(s["id"], db.get_collection(s["collectionName"], **self._coll_opts(s.get("collectionOptions"))))
            elif kind == "session":
                client = self._entity(s["client"])
                so = s.get("sessionOptions") or {}
                unknown = set(so) - {"causalConsistency", "snapshot"}
                if unknown:
                    raise UnifiedSkip(f"session options {sorted(unknown)} not supported by this runner")
                sess = client.start_session(causal_consistency=so.get("causalConsistency"),
                                            snapshot=so.get("snapshot", False))
                self._store(s["id"], sess)
                self.session_lsids[s["id"]] = sess.session_id
            else:
                raise UnifiedSkip(f"entity type {kind} not supported by this runner")

    @staticmethod
    def _coll_opts(opts: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        from pymongo.read_concern import ReadConcern
        from pymongo.read_preferences import read_pref_mode_from_name, make_read_preference

        out = {}
        for k, v in (opts or {}).items():
            if k == "readConcern":
                out["read_concern"] = ReadConcern(**v)
            elif k == "writeConcern":
                out["write_concern"] = WriteConcern(**v)
            elif k == "readPreference":
                out["read_preference"] = make_read_preference(read_pref_mode_from_name(v["mode"]), v.get("tagSets"))
            else:
                raise UnifiedFailure(f"unsupported collection/database option {k}")
        return out

    # -- setup -------------------------------------------------------------------------------
    def _initial_data(self, data: List[Dict[str, Any]]) -> None:
        for cd in data:
            db = self.internal.get_database(cd["databaseName"], write_concern=WriteConcern(w="majority"))
            db.drop_collection(cd["collectionName"])
            opts = cd.get("createOptions")
            if opts or not cd["documents"]:
                db.create_collection(cd["collectionName"], check_exists=False, **(opts or {}))
            if cd["documents"]:
                db[cd["collectionName"]].insert_many(cd["documents"])

    # -- operations --------------------------------------------------------------------------
    def _run_special(self, op: Dict[str, Any]) -> None:
        name, args = op["name"], op.get("arguments", {})
        if name == "failPoint":
            client = self._entity(args["client"])
            fp = args["failPoint"]
            client.admin.command(SON(list(fp.items())))
            self.failpoints.append((client, fp["configureFailPoint"]))
        elif name in ("assertCollectionExists", "assertCollectionNotExists"):
            names = self.internal[args["databaseName"]].list_collection_names()
            present = args["collectionName"] in names
            if present != (name == "assertCollectionExists"):
                raise UnifiedFailure(f"{name}: {args['databaseName']}.{args['collectionName']} present={present}")
        elif name in ("assertIndexExists", "assertIndexNotExists"):
            coll = self.internal[args["databaseName"]][args["collectionName"]]
            present = args["indexName"] in [i["name"] for i in coll.list_indexes()]
            if present != (name == "assertIndexExists"):
                raise UnifiedFailure(f"{name}: {args['indexName']} present={present}")
        elif name == "createEntities":
            self._create_entities(args["entities"])
        else:
            raise UnifiedSkip(f"special operation {name} not supported by this runner")

    def _iterate_until_document(self, stream) -> Any:
        deadline = time.monotonic() + ITERATE_DEADLINE_S
        # ChangeStream.next() is exactly this loop without the deadline.
        while stream.alive:
            doc = stream.try_next()
            if doc is not None:
                return doc
            if time.monotonic() > deadline:
                raise UnifiedFailure(f"iterateUntilDocumentOrError: no document within {ITERATE_DEADLINE_S:.0f}s")
        raise UnifiedFailure("iterateUntilDocumentOrError: the change stream closed without a document")

    def _execute(self, op: Dict[str, Any]) -> Any:
        from pymongo.change_stream import ChangeStream
        from pymongo.collection import Collection
        from pymongo.database import Database

        target = self._entity(op["object"])
        name = op["name"]
        args = dict(op.get("arguments") or {})
        if "session" in args:
            args["session"] = self._entity(args["session"])

        if name == "createChangeStream" and isinstance(target, (MongoClient, Database, Collection)):
            stream = target.watch(**_map_args(args, _CS_ARGS, name))
            self.streams.append(stream)
            return stream

        if isinstance(target, ChangeStream):
            if name == "iterateUntilDocumentOrError":
                return self._iterate_until_document(target)
            if name == "iterateOnce":
                return target.try_next()
            if name == "close":
                return target.close()
            raise UnifiedFailure(f"unsupported change stream operation {name}")

        if isinstance(target, MongoClient):
            if name == "listDatabaseNames":
                return target.list_database_names()
            raise UnifiedFailure(f"unsupported client operation {name}")

        if isinstance(target, Database):
            if name == "dropCollection":
                return target.drop_collection(args.pop("collection"), **args)
            if name == "createCollection":
                coll = args.pop("collection")
                target.create_collection(coll, check_exists=False, **args)
                return None
            if name == "runCommand":
                cmd_name = args.pop("commandName")
                cmd = args.pop("command")
                ordered = SON([(cmd_name, cmd[cmd_name])])
                for k, v in cmd.items():
                    if k != cmd_name:
                        ordered[k] = v
                args.pop("readPreference", None)
                return target.command(ordered, **args)
            if name == "modifyCollection":
                coll = args.pop("collection")
                return target.command(SON([("collMod", coll)] + list(args.items())))
            if name == "listCollectionNames":
                return target.list_collection_names(**args)
            if name == "listCollections":
                return list(target.list_collections(**args))
            if name == "aggregate":
                return list(target.aggregate(args.pop("pipeline"), **args))
            raise UnifiedFailure(f"unsupported database operation {name}")

        if isinstance(target, Collection):
            if name == "insertOne":
                return target.insert_one(args.pop("document"), **args)
            if name == "insertMany":
                return target.insert_many(args.pop("documents"), **args)
            if name in ("updateOne", "updateMany"):
                fn = target.update_one if name == "updateOne" else target.update_many
                kw = _map_args({k: v for k, v in args.items() if k not in ("filter", "update", "session")},
                               {"upsert": "upsert", "arrayFilters": "array_filters", "hint": "hint",
                                "collation": "collation", "comment": "comment", "let": "let"}, name)
                return fn(args["filter"], args["update"], session=args.get("session"), **kw)
            if name == "replaceOne":
                kw = _map_args({k: v for k, v in args.items() if k not in ("filter", "replacement", "session")},
                               {"upsert": "upsert", "hint": "hint", "collation": "collation",
                                "comment": "comment", "let": "let"}, name)
                return target.replace_one(args["filter"], args["replacement"], session=args.get("session"), **kw)
            if name in ("deleteOne", "deleteMany"):
                fn = target.delete_one if name == "deleteOne" else target.delete_many
                return fn(args.pop("filter"), **args)
            if name == "find":
                flt = args.pop("filter", {})
                kw = _map_args({k: v for k, v in args.items() if k != "session"},
                               {"sort": "sort", "limit": "limit", "skip": "skip", "projection": "projection",
                                "batchSize": "batch_size", "comment": "comment"}, name)
                if "sort" in kw:
                    kw["sort"] = list(kw["sort"].items())
                return list(target.find(flt, session=args.get("session"), **kw))
            if name == "aggregate":
                return list(target.aggregate(args.pop("pipeline"), **args))
            if name == "countDocuments":
                return target.count_documents(args.pop("filter"), **args)
            if name == "drop":
                return target.drop(**args)
            if name == "rename":
                to = args.pop("to")
                return target.rename(to, **args)
            if name == "createIndex":
                keys = list(args.pop("keys").items())
                return target.create_index(keys, **args)
            if name == "dropIndex":
                return target.drop_index(args.pop("name"), **args)
            if name == "listIndexes":
                return list(target.list_indexes())
            raise UnifiedFailure(f"unsupported collection operation {name}")

        raise UnifiedFailure(f"operation {name} on unsupported entity {op['object']}")

    def _check_error(self, exc: BaseException, exp: Dict[str, Any]) -> None:
        where = f"expected error {exp}, got {type(exc).__name__}: {exc}"
        if exp.get("isClientError") is True:
            if isinstance(exc, ConnectionFailure):
                if isinstance(exc, NotPrimaryError):
                    raise UnifiedFailure(f"isClientError: {where}")
            elif not isinstance(exc, (InvalidOperation, ConfigurationError)) and isinstance(exc, PyMongoError):
                raise UnifiedFailure(f"isClientError: {where}")
        if exp.get("isClientError") is False and not isinstance(exc, (OperationFailure, NotPrimaryError)):
            raise UnifiedFailure(f"isClientError false (a server error): {where}")
        if exp.get("isTimeoutError") is True and not (isinstance(exc, PyMongoError) and exc.timeout):
            raise UnifiedFailure(f"isTimeoutError: {where}")
        if exp.get("isTimeoutError") is False and isinstance(exc, PyMongoError) and exc.timeout:
            raise UnifiedFailure(f"isTimeoutError false: {where}")
        if "errorContains" in exp and exp["errorContains"].lower() not in str(exc).lower():
            raise UnifiedFailure(f"errorContains: {where}")
        details = getattr(exc, "details", None) or {}
        if "errorCode" in exp and getattr(exc, "code", None) != exp["errorCode"]:
            raise UnifiedFailure(f"errorCode: {where} (details {details})")
        if "errorCodeName" in exp and details.get("codeName") != exp["errorCodeName"]:
            raise UnifiedFailure(f"errorCodeName: {where} (details {details})")
        for label in exp.get("errorLabelsContain", []):
            if not (isinstance(exc, PyMongoError) and exc.has_error_label(label)):
                raise UnifiedFailure(f"errorLabelsContain {label}: {where} (details {details})")
        for label in exp.get("errorLabelsOmit", []):
            if isinstance(exc, PyMongoError) and exc.has_error_label(label):
                raise UnifiedFailure(f"errorLabelsOmit {label}: {where} (details {details})")
        if "errorResponse" in exp:
            self.matcher.match(exp["errorResponse"], details, root=True)
        if "expectResult" in exp:
            raise UnifiedSkip("expectError.expectResult (bulk write results) not supported by this runner")

    def _run_operation(self, op: Dict[str, Any]) -> None:
        if op["object"] == "testRunner":
            self._run_special(op)
            return
        expect_error = op.get("expectError")
        try:
            result = self._execute(op)
        except (UnifiedSkip, UnifiedFailure):
            raise
        except Exception as exc:  # the operation's own error
            if op.get("ignoreResultAndError") and isinstance(exc, PyMongoError):
                return
            if expect_error is None:
                raise UnifiedFailure(f"operation {op['name']} on {op['object']} failed: {type(exc).__name__}: {exc}"
                                     f" (details {getattr(exc, 'details', None)})") from exc
            self._check_error(exc, expect_error)
            return
        if expect_error is not None:
            raise UnifiedFailure(f"operation {op['name']} on {op['object']} succeeded ({result!r}); expected error {expect_error}")
        if "expectResult" in op:
            try:
                self.matcher.match(op["expectResult"], coerce_result(result), root=True)
            except MatchError as e:
                raise UnifiedFailure(f"{op['name']} on {op['object']}: result mismatch: {e}") from None
        if "saveResultAsEntity" in op:
            if result is None:
                raise UnifiedFailure(f"{op['name']}: no result to save as {op['saveResultAsEntity']}")
            self._store(op["saveResultAsEntity"], result)

    # -- expectations ------------------------------------------------------------------------
    def _check_events(self, expect: List[Dict[str, Any]]) -> None:
        for block in expect:
            if block.get("eventType", "command") != "command":
                raise UnifiedSkip(f"{block['eventType']} events not supported by this runner")
            rec = self.listeners.get(block["client"])
            if rec is None:
                raise UnifiedFailure(f"client {block['client']} has no event listener")
            actual = list(rec.events)
            expected = block["events"]
            if block.get("ignoreExtraEvents"):
                actual = actual[: len(expected)]

            def show(evs):
                return "\n    ".join(
                    f"{k} {e.command_name} {json_util.dumps(getattr(e, 'command', getattr(e, 'reply', getattr(e, 'failure', None))))[:300]}"
                    for k, e in evs)

            if len(actual) != len(expected):
                raise UnifiedFailure(
                    f"client {block['client']}: expected {len(expected)} event(s), got {len(actual)}:\n"
                    f"  expected: {json_util.dumps(expected)}\n  actual:\n    {show(actual)}")
            for i, (exp, (kind, ev)) in enumerate(zip(expected, actual)):
                (ekind, espec), = exp.items()
                if ekind != kind:
                    raise UnifiedFailure(f"event {i}: expected {ekind}, got {kind} ({ev.command_name})")
                try:
                    for key, val in espec.items():
                        if key == "command":
                            self.matcher.match(val, ev.command, root=True, path=f"events[{i}].command")
                        elif key == "reply":
                            self.matcher.match(val, ev.reply, root=True, path=f"events[{i}].reply")
                        elif key == "commandName":
                            self.matcher.match(val, ev.command_name, root=False, path=f"events[{i}].commandName")
                        elif key == "databaseName":
                            self.matcher.match(val, ev.database_name, root=False, path=f"events[{i}].databaseName")
                        elif key == "hasServiceId":
                            if bool(val) != (ev.service_id is not None):
                                raise MatchError(f"events[{i}].hasServiceId: expected {val}")
                        elif key == "hasServerConnectionId":
                            if bool(val) != (ev.server_connection_id is not None):
                                raise MatchError(f"events[{i}].hasServerConnectionId: expected {val}")
                        else:
                            raise UnifiedSkip(f"event field {key} not supported by this runner")
                except MatchError as e:
                    raise UnifiedFailure(f"client {block['client']}: {e}\n  actual events:\n    {show(actual)}") from None

    def _check_outcome(self, outcome: List[Dict[str, Any]]) -> None:
        for cd in outcome:
            coll = self.internal[cd["databaseName"]][cd["collectionName"]]
            actual = list(coll.find({}, sort=[("_id", 1)]))
            exp = sorted(cd["documents"], key=lambda d: d["_id"])
            if json_util.dumps(sorted_docs(actual)) != json_util.dumps(sorted_docs(exp)):
                raise UnifiedFailure(f"outcome {cd['databaseName']}.{cd['collectionName']}: expected {exp}, got {actual}")

    # -- main ----------------------------------------------------------------------------------
    def run(self) -> None:
        f, t = self.case.file, self.case.test
        ver = parse_version(f["schemaVersion"])
        if ver[0] != SUPPORTED_SCHEMA[0] or _cmp_version(ver, SUPPORTED_SCHEMA) > 0:
            raise UnifiedFailure(f"unsupported schemaVersion {f['schemaVersion']}")
        why = requirements_failure(f.get("runOnRequirements"), self.server, self.internal)
        if why:
            raise UnifiedSkip(why)
        if t.get("skipReason"):
            raise UnifiedSkip(f"skipReason: {t['skipReason']}")
        why = requirements_failure(t.get("runOnRequirements"), self.server, self.internal)
        if why:
            raise UnifiedSkip(why)
        why = driver_skip_reason(self.case)
        if why:
            raise UnifiedSkip(why)

        try:
            self._create_entities(f.get("createEntities", []))
            if "initialData" in f:
                self._initial_data(f["initialData"])
            for op in t["operations"]:
                self._run_operation(op)
            for rec in self.listeners.values():
                rec.enabled = False
        finally:
            self._teardown()
        if "expectEvents" in t:
            self._check_events(t["expectEvents"])
        if "outcome" in t:
            self._check_outcome(t["outcome"])

    def _teardown(self) -> None:
        for rec in self.listeners.values():
            rec.enabled = False
        for client, name in self.failpoints:
            try:
                client.admin.command({"configureFailPoint": name, "mode": "off"})
            except PyMongoError:
                # Try through the internal client if the entity's connection is broken.
                self.internal.admin.command({"configureFailPoint": name, "mode": "off"})
        for s in self.streams:
            try:
                s.close()
            except PyMongoError:
                pass
        for v in self.entities.values():
            if isinstance(v, pymongo.client_session.ClientSession):
                v.end_session()
        for c in self.clients:
            c.close()


def sorted_docs(docs):
    def norm(v):
        if isinstance(v, dict):
            return {k: norm(v[k]) for k in sorted(v)}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return [norm(d) for d in docs]
