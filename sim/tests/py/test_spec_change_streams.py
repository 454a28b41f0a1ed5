"""MongoDB unified-format change-stream spec tests, run with pymongo against mongo-sim.

Reads `$TRIBUTARY_FIXTURES/mongodb-specs/change-streams/{unified,related}/*.json` in place (default
TRIBUTARY_FIXTURES = <repo root>/../shared/fixtures). One pytest test per spec test, id
`<dir>/<file>::<description>`. A test the single-node 7.0 replica set cannot satisfy is skipped
with its reason; everything else must pass. Runner: unified_runner.py.
"""

from __future__ import annotations

import os

import pytest
from pymongo import MongoClient

from unified_runner import CLIENT_GUARDS, ServerInfo, UnifiedSkip, UnifiedTestRunner, collect_cases

_ROOT = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.environ.get("TRIBUTARY_FIXTURES") or os.path.join(_ROOT, "..", "..", "..", "..", "shared", "fixtures")
SPEC_DIR = os.path.normpath(os.path.join(FIXTURES, "mongodb-specs", "change-streams"))

if not os.path.isdir(os.path.join(SPEC_DIR, "unified")):
    pytest.skip(f"change-stream spec tests not found at {SPEC_DIR} (set TRIBUTARY_FIXTURES)", allow_module_level=True)

CASES = collect_cases(SPEC_DIR)


@pytest.fixture(scope="module")
def spec_env(sim_uri):
    internal = MongoClient(sim_uri, **CLIENT_GUARDS)
    server = ServerInfo.probe(internal)
    yield sim_uri, server, internal
    internal.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_spec(case, spec_env):
    uri, server, internal = spec_env
    runner = UnifiedTestRunner(case, uri, server, internal)
    try:
        runner.run()
    except UnifiedSkip as skip:
        pytest.skip(str(skip))
