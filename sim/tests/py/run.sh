#!/usr/bin/env bash
# Runs the pymongo checks and the MongoDB unified change-stream spec tests against mongo-sim.
#
#   bash sim/tests/py/run.sh [extra pytest args]
#
# - creates <repo>/.venv when missing and installs requirements.txt (again only when it changed;
#   scripts/ensure-venv.sh);
# - builds mongo-sim (cargo build -p mongo-sim --release, honouring CARGO_TARGET_DIR) unless
#   MONGO_SIM_BIN names a binary (`make test` passes the debug one `cargo test` built);
# - starts one shared simulator on a free port and exports MONGO_SIM_URI / MONGO_SIM_BIN;
# - runs pytest on this folder and exits with pytest's status; the simulator is stopped on exit.
#
# If MONGO_SIM_URI is already set (e.g. a real replica set), no simulator is built or started;
# tests that need a private simulator then skip unless MONGO_SIM_BIN names a binary.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
VENV="$ROOT/.venv"

log() { echo "run.sh: $*" >&2; }

# --- Python environment -------------------------------------------------------------------
bash "$ROOT/scripts/ensure-venv.sh"

# --- Simulator -----------------------------------------------------------------------------
SIM_PID=""
SIM_LOG=""
cleanup() {
    if [ -n "$SIM_PID" ] && kill -0 "$SIM_PID" 2>/dev/null; then
        kill "$SIM_PID" 2>/dev/null || true
        wait "$SIM_PID" 2>/dev/null || true
    fi
    [ -n "$SIM_LOG" ] && rm -f "$SIM_LOG"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${MONGO_SIM_URI:-}" ]; then
    cd "$ROOT"
    if [ -z "${MONGO_SIM_BIN:-}" ]; then
        log "building mongo-sim (release)"
        cargo build -q -p mongo-sim --release
        target_dir="$(cargo metadata --format-version 1 --no-deps \
            | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
        export MONGO_SIM_BIN="$target_dir/release/mongo-sim"
    fi
    [ -x "$MONGO_SIM_BIN" ] || { log "no binary at $MONGO_SIM_BIN"; exit 1; }

    SIM_LOG="$(mktemp -t mongo-sim.XXXXXX)"
    addr=""
    for attempt in 1 2 3; do
        port="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
        "$MONGO_SIM_BIN" --port "$port" >"$SIM_LOG" 2>&1 &
        SIM_PID=$!
        for _ in $(seq 1 300); do   # up to 30 s
            addr="$(sed -n 's/.*mongo-sim listening on \([^ ]*\).*/\1/p' "$SIM_LOG" | head -n1)"
            [ -n "$addr" ] && break
            kill -0 "$SIM_PID" 2>/dev/null || break
            sleep 0.1
        done
        [ -n "$addr" ] && break
        log "simulator did not start on port $port (attempt $attempt):"; cat "$SIM_LOG" >&2
        kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=""
    done
    [ -n "$addr" ] || { log "giving up: mongo-sim never printed its listening line"; exit 1; }
    export MONGO_SIM_URI="mongodb://$addr/?replicaSet=rs0"
    log "mongo-sim (pid $SIM_PID) at $MONGO_SIM_URI"
else
    log "using MONGO_SIM_URI=$MONGO_SIM_URI (no simulator started)"
fi

export PYTHONDONTWRITEBYTECODE=1
export TRIBUTARY_FIXTURES="${TRIBUTARY_FIXTURES:-$ROOT/../shared/fixtures}"

# --- Tests ----------------------------------------------------------------------------------
cd "$HERE"
set +e
"$VENV/bin/python" -m pytest -rs -p no:cacheprovider "$HERE" "$@"
status=$?
set -e
if [ $status -ne 0 ] && [ -n "$SIM_LOG" ] && [ -s "$SIM_LOG" ]; then
    log "last lines of the simulator's output:"; tail -n 40 "$SIM_LOG" >&2
fi
exit $status
