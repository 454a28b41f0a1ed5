#!/usr/bin/env bash
# `make bench`: every benchmark of the workspace against one throwaway PostgreSQL cluster.
#
#   scripts/bench.sh            # sink, mongo-sim's own benches (if any), pipeline (a)-(d)
#   PIPELINE_BENCH_ORDERS=100000 PIPELINE_BENCH_CHANGES=50000 PIPELINE_BENCH_SECS=15 \
#     PIPELINE_BENCH_WRITE=1 scripts/bench.sh      # a quick run that still refreshes the doc
#
# The cluster keeps the server defaults (fsync and synchronous commit on: what a user runs),
# plus track_commit_timestamp = on so the lag benchmark can read each row's commit instant; the
# full-sync scenario alone turns fsync off (its strict baseline is a CPU-bound COPY).
# Each benchmark refreshes its own sections of BENCHMARKS.md; see benches/*.rs for the sizes.
# BENCH_DATABASE_URL=postgres://... uses that server instead (databases are created per run).
set -euo pipefail

cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

# Build everything first, so compile time never overlaps a measurement.
$CARGO bench --workspace --no-run

pgdir=""
cleanup() {
  if [[ -n "$pgdir" ]]; then
    bash scripts/pg-throwaway.sh stop "$pgdir" || true
  fi
}
trap cleanup EXIT

if [[ -z "${BENCH_DATABASE_URL:-}" ]]; then
  pgdir=$(mktemp -d /tmp/tributary-bench-pg.XXXXXX)
  url=$(bash scripts/pg-throwaway.sh start "$pgdir")
  # track_commit_timestamp needs a restart; pg_ctl restart reuses the start options (port, socket dir).
  psql -q -X -d "$url" -c "ALTER SYSTEM SET track_commit_timestamp = on"
  bindir=$(pg_config --bindir 2>/dev/null || true)
  [[ -x "$bindir/pg_ctl" ]] || bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  if [[ "$(id -u)" = 0 ]]; then
    runuser -u postgres -- "$bindir/pg_ctl" -D "$pgdir/data" -l "$pgdir/postgres.log" -w restart >/dev/null
  else
    "$bindir/pg_ctl" -D "$pgdir/data" -l "$pgdir/postgres.log" -w restart >/dev/null
  fi
  export BENCH_DATABASE_URL="$url"
  # Ours to reconfigure: the full-sync scenario turns fsync off for its strict baseline.
  export BENCH_THROWAWAY=1
fi
export TEST_DATABASE_URL="$BENCH_DATABASE_URL"

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB RAM; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== postgres: $BENCH_DATABASE_URL"

echo "== cargo bench --bench sink"
$CARGO bench --bench sink

# mongo-sim's own benchmarks: whatever [[bench]] targets sim/Cargo.toml declares.
sim_benches=$(awk '/^\[\[bench\]\]/{b=1; next} /^\[/{b=0} b && /^name *=/{gsub(/"/, "", $3); print $3}' sim/Cargo.toml)
if [[ -z "$sim_benches" ]]; then
  echo "== mongo-sim declares no [[bench]] target; skipped"
fi
for b in $sim_benches; do
  echo "== cargo bench -p mongo-sim --bench $b"
  $CARGO bench -p mongo-sim --bench "$b"
done

echo "== cargo bench --bench pipeline"
$CARGO bench --bench pipeline -- ${PIPELINE_BENCH:-full-sync stream lag}

echo "== cargo bench --bench sharded"
$CARGO bench --bench sharded -- ${SHARDED_BENCH:-split stream}
