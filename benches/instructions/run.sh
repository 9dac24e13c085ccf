#!/usr/bin/env bash
# Instructions the proxy executes per transaction, counted by valgrind's callgrind: the same
# count for the same binary and workload whatever else the machine is doing, so a change to
# the hot path can be judged without the ±8 % noise of a throughput run.
#
#   cargo build --release && bash benches/instructions/run.sh [out.md]
#
# Starts a throwaway PostgreSQL (as the postgres user when run as root; initdb refuses root),
# loads pgbench scale 10, and runs the release binary under callgrind for:
#   - passthrough: pgbench -S at 8 clients, -M prepared|simple|extended (no policy), counted as
#     the difference between a 1,000- and a 9,000-transaction run (start-up cancels out);
#   - cache hits: a policy placing pgbench_accounts, 25 s of warm-up on 500 hot keys, then
#     8,000 transactions at 8 clients with instrumentation switched on only for them.
# Needs valgrind, pgbench, psql, curl and PostgreSQL's server binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/pgpolyglot}
OUT=${1:-/dev/stdout}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }

WORK_PREFIX=pgpolyglot-instr PG_EXTRA_CONF="wal_level = logical" . benches/throwaway_pg.sh
UPSTREAM="postgres://postgres@127.0.0.1:$PGPORT/postgres"
mkdir -p "$WORK/nopolicy" "$WORK/cache"
write_cache_policy "$WORK/cache/bench.toml"
cat > "$WORK/hot.sql" <<'EOF'
\set aid random(1, 500)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
EOF

# Reads all of callgrind_annotate's output (a `grep -m1` would SIGPIPE it under pipefail).
total_ir() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",","",$1); print $1; done=1}'; }

# start_proxy POLICIES EXTRA_VALGRIND_ARGS -> sets VPID, PORT, HTTP
start_proxy() {
  PORT=$(free_port); HTTP=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" $2 "$BIN" serve \
    --listen "127.0.0.1:$PORT" --upstream "$UPSTREAM" --policies "$1" \
    --http "127.0.0.1:$HTTP" >"$WORK/proxy.log" 2>&1 &
  VPID=$!
  # Under valgrind the proxy starts slowly: up to a minute.
  wait_for_pg "$PORT" 300 || { echo "proxy did not start: $(cat "$WORK/proxy.log")" >&2; exit 1; }
}
stop_proxy() { kill -INT "$VPID"; wait "$VPID" || true; }

passthrough() { # MODE TXNS -> total instructions
  start_proxy "$WORK/nopolicy" ""
  pgbench -h 127.0.0.1 -p "$PORT" -U postgres -S -M "$1" -c 8 -j 2 -t $(( $2 / 8 )) postgres >/dev/null 2>&1
  stop_proxy
  total_ir "$WORK/cg.out"
}

cache_hits() { # MODE -> instructions per transaction, and hit/miss counts
  start_proxy "$WORK/cache" "--instr-atstart=no"
  pgbench -h 127.0.0.1 -p "$PORT" -U postgres -n -f "$WORK/hot.sql" -M "$1" -c 4 -j 2 -T 25 postgres >/dev/null 2>&1
  local before after
  before=$(curl -s "http://127.0.0.1:$HTTP/metrics" | awk '/^pgpolyglot_cache_hits_total/ {print $2}')
  callgrind_control -i on "$VPID" >/dev/null 2>&1
  pgbench -h 127.0.0.1 -p "$PORT" -U postgres -n -f "$WORK/hot.sql" -M "$1" -c 8 -j 2 -t 1000 postgres >/dev/null 2>&1
  callgrind_control -i off "$VPID" >/dev/null 2>&1
  after=$(curl -s "http://127.0.0.1:$HTTP/metrics" | awk '/^pgpolyglot_cache_hits_total/ {print $2}')
  stop_proxy
  echo "$(( $(total_ir "$WORK/cg.out") / 8000 )) $(( after - before ))"
}

{
  echo "# Instructions per transaction (callgrind)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); binary: $BIN ($("$BIN" --version 2>/dev/null || true))"
  echo "- passthrough: pgbench -S, 8 clients, no policy: (Ir of 9,000 txns - Ir of 1,000) / 8,000"
  echo "- cache hits: 500 hot keys placed after 25 s of warm-up; 8,000 txns at 8 clients counted"
  echo
  echo "| workload | mode | instructions / transaction | note |"
  echo "|---|---|---:|---|"
  for mode in prepared simple extended; do
    a=$(passthrough "$mode" 1000); b=$(passthrough "$mode" 9000)
    echo "| passthrough | $mode | $(( (b - a) / 8000 )) | |"
  done
  for mode in prepared simple; do
    read -r ir hits < <(cache_hits "$mode")
    echo "| cache hits | $mode | $ir | $hits of 8000 answered from the cache |"
  done
} > "$OUT"
