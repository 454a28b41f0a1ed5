#!/usr/bin/env bash
# `make demo`: a throwaway Postgres, mongo-sim seeded with a shop, `tributary sync` streaming it,
# and a writer producing a trickle of realistic changes. Shows rows per table and lag every few
# seconds; Ctrl-C stops everything and removes the temporary files.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_ORDERS=${DEMO_ORDERS:-20000}
DEMO_RATE=${DEMO_RATE:-50}

if [ "${DEMO_SKIP_BUILD:-0}" != 1 ]; then
  echo "== building (release; the first build takes a few minutes) =="
  cargo build --release --quiet -p tributary -p mongo-sim --bins --examples
fi
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target/release"

work=$(mktemp -d /tmp/tributary-demo.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "== stopping =="
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bash scripts/pg-throwaway.sh stop "$work/pg"
  rm -rf "$work"
  echo "cleaned up"
}
trap cleanup INT TERM EXIT

echo "== starting a throwaway Postgres =="
DATABASE_URL=$(PG_FAST=1 bash scripts/pg-throwaway.sh start "$work/pg")
export DATABASE_URL

echo "== starting mongo-sim with $DEMO_ORDERS seeded orders =="
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/mongo-sim" --port "$port" --seed-demo "$DEMO_ORDERS" > "$work/sim.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do grep -q "listening" "$work/sim.log" && break; sleep 0.1; done
grep -q "listening" "$work/sim.log" || { echo "mongo-sim did not start:"; cat "$work/sim.log"; exit 3; }
export MONGO_URI="mongodb://127.0.0.1:$port/?replicaSet=rs0"

metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/tributary.toml" <<TOML
[mongo]
uri = "\${MONGO_URI}"
source = "change_stream"

[postgres]
uri = "\${DATABASE_URL}"
schema = "public"

[sync]
name = "demo"
mappings = "$PWD/mappings/demo"

[metrics]
listen = "127.0.0.1:$metrics_port"
TOML

"$bin/tributary" check --config "$work/tributary.toml"
"$bin/tributary" schema --config "$work/tributary.toml" --apply

echo "== tributary sync (log: $work/tributary.log) =="
"$bin/tributary" sync --config "$work/tributary.toml" > "$work/tributary.log" 2>&1 &
pids+=($!)
"$bin/examples/demo_writer" "$MONGO_URI" "$DEMO_RATE" > "$work/writer.log" 2>&1 &
pids+=($!)

cat <<INFO

  metrics:  http://127.0.0.1:$metrics_port/metrics   (also /healthz, /readyz)
  try:      psql '$DATABASE_URL' -c 'select status, count(*) from orders group by 1'
  status:   $bin/tributary status --config $work/tributary.toml
  Ctrl-C stops everything.

INFO
while true; do
  sleep 3
  if ! kill -0 "${pids[1]}" 2>/dev/null; then
    echo "tributary sync exited; last log lines:"; tail -n 20 "$work/tributary.log"; exit 3
  fi
  counts=$(psql "$DATABASE_URL" -tA -F' ' -c "select 'customers', count(*) from customers union all select 'products', count(*) from products union all select 'orders', count(*) from orders union all select 'order_items', count(*) from order_items" 2>/dev/null | tr '\n' ' ')
  lag=$(curl -s "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null | awk '/^tributary_lag_seconds /{print $2}')
  echo "$(date +%T)  rows: ${counts:-?}  lag: ${lag:-?}s"
done
