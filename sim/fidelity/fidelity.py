"""Runs pymongo's own test suite, unpatched, against mongo-sim and compares the failures with
the committed expected-failures list (sim/fidelity/expected-failures.txt).

Called by run.sh, which prepares the venv, the extracted sdist and the simulator binary:

    python fidelity.py --sim BIN --src PYMONGO_SDIST_DIR --expected FILE --results DIR [FILE...]

Each test file gets a fresh simulator on a free port (so one file's collections, fail points
and sessions cannot leak into the next) and runs as pymongo's CI runs it: `pytest test/FILE.py`
from the sdist with `DB_IP`/`DB_PORT` pointing at the simulator. The outcome of each test is
read from pytest's junit XML.

Expected failures are fnmatch patterns over `FILE::CLASS::TEST` ids, each with a reason. The run
fails when a test fails that no pattern covers (a new failure), when a pattern covers no failing
test (the feature now works: the entry must go), or when a simulator died or hung during a file.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

# The files issue 15 names: the areas a change-data-capture tool leans on (change streams,
# transactions, sessions, retryable reads/writes, cursors, CRUD, command monitoring).
DEFAULT_FILES = [
    "test_change_stream",
    "test_crud_unified",
    "test_transactions_unified",
    "test_transactions",
    "test_cursor",
    "test_retryable_writes_unified",
    "test_retryable_reads_unified",
    "test_sessions_unified",
    "test_session",
    "test_collection",
    "test_database",
    "test_bulk",
    "test_command_monitoring",
]

# `--short` (`make test` runs it): what Tributary leans on, in about a minute — change streams
# whole, the transactions API, and the cursor tests of tailable/awaitData cursors, batches and
# getMore/killCursors. (file, pytest -k expression or None for the whole file)
SHORT_FILES = [
    ("test_change_stream", None),
    ("test_transactions", None),
    ("test_cursor", "tailable or await or concurrent_close or batch_size or getmore or kill "
                    "or close or alive or rewind or clone or limit or skip"),
]

# A file whose tests hang would otherwise hold the target forever; pytest-timeout bounds each
# test, this bounds the file (the slowest, transactions_unified, takes a few minutes).
FILE_TIMEOUT_S = 1200
TEST_TIMEOUT_S = 60


@dataclass
class Outcome:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    trouble: str = ""


@dataclass
class Expected:
    pattern: str
    reason: str
    line: int
    hits: int = 0


def load_expected(path: Path) -> list[Expected]:
    entries = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, reason = line.partition(" -- ")
        if not sep or not reason.strip():
            sys.exit(f"{path}:{n}: expected 'PATTERN -- reason', got {raw!r}")
        entries.append(Expected(pattern.strip(), reason.strip(), n))
    return entries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sim(binary: str, log_path: Path) -> tuple[subprocess.Popen, int]:
    for _ in range(3):
        port = free_port()
        log = open(log_path, "wb")
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1"], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if b"listening on" in log_path.read_bytes():
                return proc, port
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        proc.kill()
        proc.wait()
    sys.exit(f"mongo-sim never printed its listening line (log: {log_path})")


def sim_answers(port: int) -> bool:
    """A `ping` over a raw OP_MSG: the simulator is alive and serving, not only running."""
    body = b"\x10ping\x00\x01\x00\x00\x00\x02$db\x00\x06\x00\x00\x00admin\x00\x00"
    doc = (len(body) + 4).to_bytes(4, "little") + body
    msg = b"\x00\x00\x00\x00" + b"\x00" + doc
    header = (16 + len(msg)).to_bytes(4, "little") + (1).to_bytes(4, "little") + bytes(4)
    header += (2013).to_bytes(4, "little")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(header + msg)
            reply = s.recv(1 << 16)
        return b"ok" in reply
    except OSError:
        return False


def test_id(file: str, case: ET.Element) -> str:
    # junit classname is "test.test_x.TestClass"; keep the class, the file names itself.
    cls = case.get("classname", "").rsplit(".", 1)[-1]
    return f"{file}::{cls}::{case.get('name', '')}"


def parse_junit(file: str, xml_path: Path, out: Outcome) -> None:
    root = ET.parse(xml_path).getroot()
    for case in root.iter("testcase"):
        tid = test_id(file, case)
        kinds = {child.tag for child in case}
        if "failure" in kinds or "error" in kinds:
            out.failed.append(tid)
            el = case.find("failure")
            if el is None:
                el = case.find("error")
            msg = (el.get("message") or "").strip().splitlines()
            out.messages[tid] = (msg[0] if msg else "")[:300]
        elif "skipped" in kinds:
            out.skipped.append(tid)
        else:
            out.passed.append(tid)


def run_file(args, file: str, select: str | None = None) -> Outcome:
    out = Outcome()
    results = Path(args.results)
    sim_log = results / f"{file}.sim.log"
    xml_path = results / f"{file}.xml"
    xml_path.unlink(missing_ok=True)
    proc, port = start_sim(args.sim, sim_log)
    env = dict(os.environ, DB_IP="127.0.0.1", DB_PORT=str(port), PYTHONDONTWRITEBYTECODE="1")
    cmd = [
        sys.executable, "-m", "pytest", f"test/{file}.py",
        "-p", "no:cacheprovider", "-q", "-rN", "--tb=line",
        f"--timeout={TEST_TIMEOUT_S}", "--timeout-method=thread",
        f"--junitxml={xml_path}", "-o", "log_cli=false",
    ] + (["-k", select] if select else []) + args.pytest_args
    started = time.monotonic()
    with open(results / f"{file}.out", "wb") as log:
        try:
            subprocess.run(cmd, cwd=args.src, env=env, stdout=log, stderr=subprocess.STDOUT,
                           timeout=FILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            out.trouble = f"timed out after {FILE_TIMEOUT_S} s"
    out.seconds = time.monotonic() - started
    if proc.poll() is not None:
        out.trouble = f"mongo-sim exited with {proc.returncode} (see {sim_log})"
    elif not sim_answers(port):
        out.trouble = f"mongo-sim stopped answering ping (see {sim_log})"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if xml_path.exists():
        parse_junit(file, xml_path, out)
    elif not out.trouble:
        out.trouble = "pytest wrote no junit XML (see .out)"
    return out


def pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f}" if b else "n/a"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim", required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--list-failures", action="store_true",
                    help="print every failing test id with its message (to write the list)")
    ap.add_argument("--short", action="store_true",
                    help="only SHORT_FILES (make test); a listed failure not seen is no error")
    ap.add_argument("files", nargs="*")
    args, args.pytest_args = ap.parse_known_args()
    if args.short:
        selected = SHORT_FILES
    else:
        selected = [(f, None) for f in (args.files or DEFAULT_FILES)]
    files = [f for f, _ in selected]
    Path(args.results).mkdir(parents=True, exist_ok=True)
    expected = load_expected(Path(args.expected))

    rows, unexpected, troubles = [], [], []
    totals = [0, 0, 0]
    for file, select in selected:
        print(f"fidelity: {file}{f' -k {select!r}' if select else ''} ...", flush=True)
        out = run_file(args, file, select)
        for tid in out.failed:
            hit = [e for e in expected if fnmatch.fnmatchcase(tid, e.pattern)]
            for e in hit:
                e.hits += 1
            if not hit:
                unexpected.append((tid, out.messages.get(tid, "")))
            if args.list_failures:
                print(f"  FAIL {tid}  {out.messages.get(tid, '')}")
        if out.trouble:
            troubles.append(f"{file}: {out.trouble}")
        p, f, s = len(out.passed), len(out.failed), len(out.skipped)
        totals = [totals[0] + p, totals[1] + f, totals[2] + s]
        rows.append((file, p, f, s, pct(p, p + f), out.seconds))
        print(f"fidelity: {file}: {p} passed, {f} failed, {s} skipped ({out.seconds:.0f} s)"
              + (f" -- {out.trouble}" if out.trouble else ""), flush=True)

    print()
    print(f"| {'file':<32} | passed | failed | skipped | pass % of run | seconds |")
    print(f"|{'-' * 34}|-------:|-------:|--------:|--------------:|--------:|")
    for file, p, f, s, rate, sec in rows:
        print(f"| {file:<32} | {p:>6} | {f:>6} | {s:>7} | {rate:>13} | {sec:>7.0f} |")
    p, f, s = totals
    print(f"| {'**total**':<32} | {p:>6} | {f:>6} | {s:>7} | {pct(p, p + f):>13} |         |")
    print()

    ran = set(files)
    # A short run leaves out most tests, so a listed failure it did not see proves nothing.
    stale = [] if args.short else [
        e for e in expected if e.hits == 0 and e.pattern.split("::", 1)[0] in ran
    ]
    status = 0
    for tid, msg in unexpected:
        print(f"NEW FAILURE {tid}: {msg}")
        status = 1
    for e in stale:
        print(f"NOW PASSES (remove line {e.line} of {args.expected}): {e.pattern} -- {e.reason}")
        status = 1
    for t in troubles:
        print(f"TROUBLE {t}")
        status = 1
    if status == 0:
        print(f"fidelity: OK; every failure is on the expected list ({len(expected)} entries)")
    return status


if __name__ == "__main__":
    sys.exit(main())
