#!/usr/bin/env bash
# `make test-fidelity`: pymongo's own test suite (PyPI sdist, pinned, unpatched) against mongo-sim,
# one fresh simulator per test file, compared with sim/fidelity/expected-failures.txt.
#
#   bash sim/fidelity/run.sh [--short] [--list-failures] [test_file ...] [extra pytest args]
#
# - downloads pymongo's sdist once (pip download --no-binary :all:) into <repo>/.tmp/fidelity
#   (gitignored) and checks its sha256, so the tests run are exactly the pinned release's;
# - creates a venv there (scripts/ensure-venv.sh) with fidelity/requirements.txt (the sdist's
#   own test requirements, pinned) and pymongo built from the same sdist;
# - `--short` (`make test`): a subset of about a minute (fidelity.py's SHORT_FILES); skips, with
#   one line saying why, when the sdist cannot be fetched;
# - builds mongo-sim (release; CARGO_TARGET_DIR is honoured) unless MONGO_SIM_BIN names one;
# - runs fidelity.py: per file pass/fail/skip, a table, and the comparison with the list.
# Only the synchronous tests (test/test_*.py) run: test/asynchronous/ repeats them over asyncio
# and would double the time without asking the server anything new.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${FIDELITY_CACHE:-$ROOT/.tmp/fidelity}"
VERSION="4.20.1"
SDIST_SHA256="1ac112b3ffa3d010cfc2fc54e3ae677a12c63d18c6115db4451df64f1a1175eb"
SDIST="$CACHE/pymongo-$VERSION.tar.gz"
SRC="$CACHE/pymongo-$VERSION"
VENV="$CACHE/venv"
SHORT=0
for a in "$@"; do [ "$a" = "--short" ] && SHORT=1; done

log() { echo "fidelity: $*" >&2; }
mkdir -p "$CACHE"

if [ ! -f "$SDIST" ]; then
    log "downloading pymongo $VERSION sdist from PyPI"
    if ! python3 -m pip download -q --disable-pip-version-check --no-binary :all: --no-deps \
        "pymongo==$VERSION" -d "$CACHE"; then
        # `make test` runs the short subset: without the network it skips, saying why.
        if [ "$SHORT" = 1 ]; then
            echo "fidelity: skipped: cannot fetch pymongo $VERSION's sdist from PyPI (offline?)"
            exit 0
        fi
        log "cannot fetch pymongo $VERSION's sdist from PyPI"; exit 1
    fi
fi
got="$(sha256sum "$SDIST" | cut -d' ' -f1)"
[ "$got" = "$SDIST_SHA256" ] || { log "$SDIST: sha256 $got, expected $SDIST_SHA256"; exit 1; }
if [ ! -f "$SRC/test/__init__.py" ]; then
    tar -xzf "$SDIST" -C "$CACHE"
fi

# The one venv recipe of the repository (scripts/ensure-venv.sh), with this suite's pins and
# pymongo built from the same sdist.
bash "$ROOT/scripts/ensure-venv.sh" "$VENV" "$HERE/requirements.txt" "$SDIST"

if [ -z "${MONGO_SIM_BIN:-}" ]; then
    cd "$ROOT"
    log "building mongo-sim (release)"
    cargo build -q -p mongo-sim --release
    target_dir="$(cargo metadata --format-version 1 --no-deps \
        | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    MONGO_SIM_BIN="$target_dir/release/mongo-sim"
fi
[ -x "$MONGO_SIM_BIN" ] || { log "no binary at $MONGO_SIM_BIN"; exit 1; }

exec "$VENV/bin/python" "$HERE/fidelity.py" --sim "$MONGO_SIM_BIN" --src "$SRC" \
    --expected "$HERE/expected-failures.txt" --results "$CACHE/results" "$@"
