#!/usr/bin/env bash
# Runs the velro-load scenarios recorded in benches/RESULTS.md against release builds of velro-pdp,
# each on a freshly seeded world. Usage (from the repository root):
#
#   cargo build --release -p velro-pdp -p velro-api -p velro-benches --bins
#   benches/load-matrix.sh [scenario ...]     # default: all
#
# Scenarios: service (gRPC/HTTP throughput and latency on 100 000 entities, SQLite), growth
# (latency from 10 to 100 000 entities), postgres (100 000 entities on PostgreSQL + Redis), api
# (the app API's GET /api/v1/generations/{id} with its embedded PDP, 100 000 entities, SQLite).
# Needs PostgreSQL and Redis for `postgres` (VELRO_TEST_DATABASE_URL, VELRO_TEST_REDIS_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PDP=$ROOT/target/release/velro-pdp
LOAD=$ROOT/target/release/velro-load
API=$ROOT/target/release/velro-api
WORK=$(mktemp -d /tmp/velro-load.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

start_pdp() { # data-dir [extra env...]
  local dir=$1; shift
  env RUST_LOG=warn PDP_LOG_FORMAT=text PDP_POLICIES="$ROOT/policies" DATA_DIR="$dir" \
    DATABASE_URL="${DATABASE_URL:-sqlite://$dir/velro.db}" PDP_AUDIT="file:$dir/audit" "$@" \
    "$PDP" serve --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 >"$dir/pdp.out" 2>"$dir/pdp.err" &
  PDP_PID=$!
  for _ in $(seq 1 200); do
    if grep -q listening "$dir/pdp.out" 2>/dev/null; then break; fi
    sleep 0.05
  done
  GRPC=http://$(sed -n 's/.*grpc=\([0-9.:]*\).*/\1/p' "$dir/pdp.out")
  HTTP=http://$(sed -n 's/.*http=\([0-9.:]*\).*/\1/p' "$dir/pdp.out")
}

stop_pdp() { kill "$PDP_PID"; wait "$PDP_PID" 2>/dev/null || true; }

run() { # title, velro-load run arguments...
  local title=$1; shift
  echo "### $title"
  echo "\$ velro-load run $*"
  "$LOAD" run "$@"
  echo
}

scenario_service() {
  local dir=$WORK/service; mkdir -p "$dir"
  "$LOAD" seed --database-url "sqlite://$dir/velro.db" --entities 100000 --manifest "$dir/world.json"
  start_pdp "$dir"
  run "cold start: gRPC Check, closed loop, 32 workers, Zipf over 100 000 entities (first 30 s)" \
    --manifest "$dir/world.json" --grpc "$GRPC" --concurrency 32 --duration 30s
  run "warm: gRPC Check, closed loop, 32 workers" \
    --manifest "$dir/world.json" --grpc "$GRPC" --concurrency 32 --duration 20s
  run "warm: gRPC Check, open loop at 5 000/s" \
    --manifest "$dir/world.json" --grpc "$GRPC" --rate 5000 --duration 20s
  run "warm: gRPC BatchCheck of 100, closed loop, 4 workers" \
    --manifest "$dir/world.json" --grpc "$GRPC" --batch 100 --concurrency 4 --warmup 10 --duration 20s
  run "warm: HTTP /v1/check, closed loop, 32 workers" \
    --manifest "$dir/world.json" --http "$HTTP" --concurrency 32 --duration 20s
  stop_pdp
}

scenario_growth() {
  for n in 10 100 1000 10000 100000; do
    local dir=$WORK/growth-$n; mkdir -p "$dir"
    "$LOAD" seed --database-url "sqlite://$dir/velro.db" --entities "$n" --manifest "$dir/world.json"
    start_pdp "$dir"
    run "$n entities: gRPC Check, open loop at 2 000/s after 5 s warm-up" \
      --manifest "$dir/world.json" --grpc "$GRPC" --rate 2000 --warmup 5 --duration 15s
    stop_pdp
  done
}

scenario_postgres() {
  local admin=${VELRO_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
  local redis=${VELRO_TEST_REDIS_URL:-redis://127.0.0.1:6379}
  local name=velro_load_$$
  psql "$admin" -qc "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name"
  local url=${admin%/*}/$name
  local dir=$WORK/postgres; mkdir -p "$dir"
  "$LOAD" seed --database-url "$url" --entities 100000 --manifest "$dir/world.json"
  DATABASE_URL=$url start_pdp "$dir" REDIS_URL="$redis" PDP_REDIS_PREFIX="velro-load-$$:"
  run "PostgreSQL + Redis, cold start: gRPC Check, closed loop, 32 workers (first 30 s)" \
    --manifest "$dir/world.json" --grpc "$GRPC" --concurrency 32 --duration 30s
  run "PostgreSQL + Redis, warm: gRPC Check, closed loop, 32 workers" \
    --manifest "$dir/world.json" --grpc "$GRPC" --concurrency 32 --duration 20s
  run "PostgreSQL + Redis, warm: gRPC Check, open loop at 5 000/s" \
    --manifest "$dir/world.json" --grpc "$GRPC" --rate 5000 --duration 20s
  stop_pdp
  psql "$admin" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)"
}

scenario_api() {
  local dir=$WORK/api; mkdir -p "$dir"
  local secret
  secret=$(od -An -tx1 -N48 /dev/urandom | tr -d ' \n')   # 96 hex characters
  "$LOAD" seed --database-url "sqlite://$dir/velro.db" --entities 100000 --manifest "$dir/world.json"
  # Rate limits out of the way: this measures the request path, not the limiter's refusals.
  env RUST_LOG=warn LOG_FORMAT=text PDP_POLICIES="$ROOT/policies" DATA_DIR="$dir" JWT_SECRET="$secret" \
    API_ADDR=127.0.0.1:0 RATE_LIMIT_USER_PER_MINUTE=1000000000 RATE_LIMIT_IP_PER_MINUTE=1000000000 \
    "$API" >"$dir/api.out" 2>"$dir/api.err" &
  local api_pid=$!
  for _ in $(seq 1 400); do
    if grep -q "listening on" "$dir/api.out" 2>/dev/null; then break; fi
    sleep 0.05
  done
  # The token secret reaches velro-load through its environment, never the printed command line.
  export JWT_SECRET=$secret
  local base
  base=$(sed -n 's/^velro-api listening on \(http:[^ ]*\).*/\1/p' "$dir/api.out")
  [ -n "$base" ] || { echo "velro-api did not start:"; cat "$dir/api.err"; return 1; }
  run "app API: GET /api/v1/generations/{id} as Zipf-chosen users, closed loop, 32 workers, after 10 s warm-up" \
    --manifest "$dir/world.json" --api "$base" --concurrency 32 --warmup 10 --duration 20s
  run "app API: GET /api/v1/generations/{id}, open loop at 1 000/s" \
    --manifest "$dir/world.json" --api "$base" --rate 1000 --duration 20s
  unset JWT_SECRET
  kill "$api_pid"; wait "$api_pid" 2>/dev/null || true
}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(service growth postgres api)
for s in "${scenarios[@]}"; do
  echo "## $s ($(date -u +%FT%TZ), commit $(git rev-parse --short HEAD))"
  "scenario_$s"
done
