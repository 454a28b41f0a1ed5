"""Shared fixtures for the pymongo checks of mongo-sim.

- `sim_uri`: the shared simulator (MONGO_SIM_URI, exported by run.sh). Without it, a private
  simulator is started from MONGO_SIM_BIN; with neither, the tests that need a server skip.
- `start_sim(*args)`: starts a private simulator (e.g. `--oplog-max-entries 20`) and returns its
  URI; stopped at the end of the test.
- `client`: a MongoClient on the shared simulator (replicaSet=rs0).
- `names`: database / collection names unique to one test, so tests never interfere.
- A per-test watchdog (SIGALRM) turns a hung simulator into a failure instead of a stuck suite.
- At the end, one summary line for the change-stream spec tests (run, passed, skipped by reason).
"""

from __future__ import annotations

import collections
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from pymongo import MongoClient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TEST_TIMEOUT_S = int(os.environ.get("SIM_PY_TEST_TIMEOUT", "120"))
CLIENT_GUARDS = {"serverSelectionTimeoutMS": 10000, "socketTimeoutMS": 30000, "connectTimeoutMS": 10000}
_LISTENING = re.compile(r"mongo-sim listening on (\S+)")


class SimProcess:
    def __init__(self, binary: str, *args: str):
        self.binary = binary
        self.args = list(args)
        self.proc = None
        self.output: list[str] = []
        self.address = None

    def start(self, timeout: float = 30.0) -> str:
        for _ in range(3):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(port), *self.args],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            )
            found = threading.Event()

            def pump():
                for line in self.proc.stdout:  # keeps draining so the pipe never fills
                    self.output.append(line)
                    m = _LISTENING.search(line)
                    if m and not found.is_set():
                        self.address = m.group(1)
                        found.set()
                found.set()

            threading.Thread(target=pump, daemon=True).start()
            found.wait(timeout)
            if self.address:
                return f"mongodb://{self.address}/?replicaSet=rs0"
            self.stop()
        raise RuntimeError("mongo-sim did not start: " + "".join(self.output[-20:]))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def sim_uri():
    uri = os.environ.get("MONGO_SIM_URI")
    if uri:
        probe = MongoClient(uri, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000)
        try:
            probe.admin.command("ping")
        except Exception as e:  # fail every test at once instead of timing out one by one
            pytest.fail(f"MONGO_SIM_URI={uri} does not answer: {e}", pytrace=False)
        finally:
            probe.close()
        yield uri
        return
    binary = os.environ.get("MONGO_SIM_BIN")
    if not binary or not os.access(binary, os.X_OK):
        pytest.skip("no simulator: set MONGO_SIM_URI or MONGO_SIM_BIN (run.sh does both)")
    sim = SimProcess(binary)
    uri = sim.start()
    yield uri
    sim.stop()


@pytest.fixture
def start_sim():
    started = []

    def _start(*args: str) -> str:
        binary = os.environ.get("MONGO_SIM_BIN")
        if not binary or not os.access(binary, os.X_OK):
            pytest.skip("needs a private simulator: MONGO_SIM_BIN is not set (run.sh sets it)")
        sim = SimProcess(binary, *args)
        started.append(sim)
        return sim.start()

    yield _start
    for sim in started:
        sim.stop()


@pytest.fixture(scope="session")
def client(sim_uri):
    c = MongoClient(sim_uri, **CLIENT_GUARDS)
    yield c
    c.close()


@pytest.fixture
def names(request):
    """Unique, readable names for this test's database and collections."""
    base = re.sub(r"[^A-Za-z0-9]+", "_", request.node.name)[:40]
    tag = uuid.uuid4().hex[:6]

    class Names:
        db = f"py_{base}_{tag}"
        coll = "c"
        other = "other"

    return Names


@pytest.fixture(autouse=True)
def _watchdog(request):
    """Fail (rather than hang) a test that runs longer than TEST_TIMEOUT_S."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_TIMEOUT_S}s (simulator not answering?)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def wait_until(predicate, what: str, timeout: float = 10.0, interval: float = 0.05):
    """Bounded poll for an asynchronous condition; returns the predicate's truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pytest_terminal_summary(terminalreporter):
    reports = []
    for key in ("passed", "failed", "skipped", "error"):
        for rep in terminalreporter.stats.get(key, []):
            nodeid = getattr(rep, "nodeid", "")
            if "test_spec_change_streams.py" in nodeid and "::test_spec" in nodeid:
                reports.append((key, rep))
    if not reports:
        return
    counts = collections.Counter()
    reasons = collections.Counter()
    seen = set()
    for key, rep in reports:
        if (rep.nodeid, key) in seen or (key == "passed" and rep.when != "call"):
            continue
        seen.add((rep.nodeid, key))
        counts[key] += 1
        if key == "skipped":
            lr = rep.longrepr
            reason = lr[2] if isinstance(lr, tuple) else str(lr)
            reason = reason.removeprefix("Skipped: ")
            reasons[reason] += 1
    total = sum(counts.values())
    ran = counts["passed"] + counts["failed"] + counts["error"]
    by_reason = ", ".join(f"{r}: {n}" for r, n in reasons.most_common())
    terminalreporter.write_line(
        f"change-streams spec tests: {total} total, run {ran}, passed {counts['passed']}, "
        f"failed {counts['failed'] + counts['error']}, skipped {counts['skipped']}"
        + (f" ({by_reason})" if by_reason else "")
    )
