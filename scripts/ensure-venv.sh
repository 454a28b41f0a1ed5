#!/usr/bin/env bash
# Makes sure <repo>/.venv exists with sim/tests/py/requirements.txt installed (pymongo and
# pytest), installing Debian's python3-venv first when we are root and it is missing.
# Used by `make test` (the Rust tests drive pymongo too) and by sim/tests/py/run.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQ="$ROOT/sim/tests/py/requirements.txt"
STAMP="$VENV/.sim-py-requirements.sha256"

log() { echo "ensure-venv: $*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            log "python3 -m venv failed; installing python3-venv"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
                || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
            python3 -m venv "$VENV"
        else
            log "python3 -m venv failed (install the python3-venv package)"; exit 1
        fi
    fi
fi
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
    log "installing $(basename "$REQ") into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
    echo "$want" > "$STAMP"
fi
