#!/usr/bin/env bash
# Makes sure Postgres server binaries (initdb, pg_ctl) exist for the test harness
# (tests/support/postgres.rs), installing Debian's `postgresql` when we are root.
# With TEST_DATABASE_URL set the tests use that server instead and nothing is needed.
set -euo pipefail

have_server_binaries() {
    local bindir
    if bindir="$(pg_config --bindir 2>/dev/null)" && [[ -x "$bindir/initdb" && -x "$bindir/pg_ctl" ]]; then
        return 0
    fi
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if [[ -n "${TEST_DATABASE_URL:-}" ]] || have_server_binaries; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "ensure-postgres: no Postgres server binaries found and not root;" \
         "install the 'postgresql' package or set TEST_DATABASE_URL" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y postgresql
have_server_binaries
