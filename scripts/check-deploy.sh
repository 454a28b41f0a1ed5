#!/usr/bin/env bash
# Checks the shipped Prometheus alert rules (deploy/prometheus/alerts.yml) with `promtool check
# rules`, installing Debian's `prometheus` package (which ships promtool) when it is missing,
# the way ensure-postgres.sh installs Postgres. Skips with one line only when apt itself is
# unavailable (not Debian/Ubuntu, or not root). Which metric names the rules and the Grafana
# dashboard use is checked by the Rust test `ops::deploy` against a running `sync`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1 || [[ "$(id -u)" -ne 0 ]]; then
        echo "check-deploy: SKIPPED promtool check rules: promtool is missing and apt-get is unavailable (install Prometheus's promtool to run it)" >&2
        exit 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing or stale in a fresh container.
    apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 || {
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends prometheus >/dev/null
    }
    # The package starts a Prometheus server where an init system runs; the tests need only
    # promtool.
    command -v promtool >/dev/null
fi

promtool check rules deploy/prometheus/alerts.yml
