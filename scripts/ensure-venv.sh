#!/usr/bin/env bash
# Makes sure <repo>/.venv exists with sim/tests/py/requirements.txt installed (pymongo and
# pytest), installing Debian's python3-venv first when we are root and it is missing.
# Used by `make test` (the Rust tests drive pymongo too) and by sim/tests/py/run.sh.
#
#   bash scripts/ensure-venv.sh [VENV REQUIREMENTS [PACKAGE...]]
#
# With arguments, the same for another venv (sim/fidelity/run.sh: pytest pins and pymongo built
# from its sdist); PACKAGEs are installed with the requirements and count in the stamp.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv}"
REQ="${2:-$ROOT/sim/tests/py/requirements.txt}"
EXTRA=("${@:3}")
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
want="$( { cat "$REQ"; printf '%s\n' "${EXTRA[@]}"; } | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
    log "installing $(basename "$REQ") ${EXTRA[*]} into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" "${EXTRA[@]}"
    echo "$want" > "$STAMP"
fi
