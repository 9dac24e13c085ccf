#!/usr/bin/env bash
# Where the machine's CPU goes per transaction of the hot-key cache benchmark, process by
# process: pgbench, Postgres (every backend, the walsender and the background processes),
# the middleman (user and system time apart), and what the cores left idle. Direct Postgres,
# PgBouncer (session pooling), pgpolyglot without a policy and pgpolyglot with the cache
# benchmark's L1 policy; same Postgres, same pgbench script (Zipf(1.1) point reads over 1M
# rows), runs alternated.
#
#   cargo build --release && bash benches/cpu/budget.sh [out.md]     # ~8 min with defaults
#
# Why: on two cores shared by pgbench, Postgres and the proxy, a target's TPS is the cores'
# time divided by what one transaction costs all processes together (plus what sits idle).
# A cache hit saves Postgres's execution but adds the proxy's own receive and send, so the
# cache can only be as much faster than direct Postgres as those costs allow. The table says
# how much: the "ceiling" is the TPS at zero idle time, and "proxy budget for 1.5×" is the CPU
# per transaction the proxy could spend for the cache target to reach 1.5× direct's TPS, with
# pgbench's and Postgres's costs as measured and no idle time.
#
# Knobs: MODES (prepared simple), CLIENTS (32), SECS (10), REPS (3), WARMUP (40 s of the
# workload through the cache target before anything is measured: its statistics need about
# half a minute before placement settles). As root, Postgres runs as the postgres user.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/pgpolyglot}
OUT=${1:-/dev/stdout}
SECS=${SECS:-10}
REPS=${REPS:-3}
MODES=${MODES:-prepared simple}
CLIENTS=${CLIENTS:-32}
WARMUP=${WARMUP:-40}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v pgbouncer >/dev/null || { echo "pgbouncer is needed" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time is needed (Debian package: time)" >&2; exit 1; }
TICK=$(getconf CLK_TCK)
CORES=$(nproc)

PIDS=()
on_exit() { for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done; }
WORK_PREFIX=pgpolyglot-budget PG_EXTRA_CONF="wal_level = logical
max_connections = 200" . benches/throwaway_pg.sh
UPSTREAM="postgres://postgres@127.0.0.1:$PGPORT/postgres"
mkdir -p "$WORK/nopolicy" "$WORK/cache"
write_cache_policy "$WORK/cache/bench.toml"
printf '[stats]\ntop_k_per_table = 200000\n' > "$WORK/cache.toml"
printf '[stats]\n' > "$WORK/plain.toml"
cat > "$WORK/zipf.sql" <<'EOF'
\set aid random_zipfian(1, 1000000, 1.1)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
EOF

# start_proxy CONFIG POLICIES -> "pid port http"
start_proxy() {
  local port http pid
  port=$(free_port); http=$(free_port)
  "$BIN" serve --config "$1" --listen "127.0.0.1:$port" --upstream "$UPSTREAM" --policies "$2" \
    --http "127.0.0.1:$http" >"$WORK/proxy-$port.log" 2>&1 &
  pid=$!
  wait_for_pg "$port" || { echo "proxy did not start: $(cat "$WORK/proxy-$port.log")" >&2; exit 1; }
  echo "$pid $port $http"
}
BPORT=$(free_port)
start_pgbouncer "$BPORT"
read -r PLAIN_PID PLAIN_PORT _ < <(start_proxy "$WORK/plain.toml" "$WORK/nopolicy")
PIDS+=("$PLAIN_PID")
read -r CACHE_PID CACHE_PORT CACHE_HTTP < <(start_proxy "$WORK/cache.toml" "$WORK/cache")
PIDS+=("$CACHE_PID")

# Postgres's CPU: every live process of the cluster plus the children the postmaster reaped
# (pgbench's backends end with its run).
pg_ticks() {
  local pm s p
  pm=$(head -1 "$WORK/data/postmaster.pid")
  s=$(awk '{print $16 + $17}' "/proc/$pm/stat")
  for p in $(pgrep -P "$pm") "$pm"; do
    s=$(( s + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) ))
  done
  echo "$s"
}
proc_ticks() { if [ -n "$1" ]; then awk '{print $14, $15}' "/proc/$1/stat"; else echo "0 0"; fi; }
idle_ticks() { awk '/^cpu / {print $5 + $6}' /proc/stat; }
cache_counter() { curl -s "http://127.0.0.1:$CACHE_HTTP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

# measure PORT PROXY_PID MODE CLIENTS -> "tps pgbench_us pg_us proxy_user_us proxy_sys_us idle_us"
measure() {
  local pg0 pg1 u0 s0 u1 s1 i0 i1 tps tx bu bs
  pg0=$(pg_ticks); read -r u0 s0 < <(proc_ticks "$2"); i0=$(idle_ticks)
  /usr/bin/time -f "%U %S" -o "$WORK/time.txt" pgbench -h 127.0.0.1 -p "$1" -U postgres -n \
    -f "$WORK/zipf.sql" -M "$3" -c "$4" -j 2 -T "$SECS" postgres >"$WORK/out.txt" 2>&1
  i1=$(idle_ticks)
  sleep 0.5 # the postmaster reaps the run's backends
  pg1=$(pg_ticks); read -r u1 s1 < <(proc_ticks "$2")
  tps=$(awk '/without initial connection time/ {print $3}' "$WORK/out.txt")
  tx=$(awk '/actually processed/ {split($NF, a, "/"); print a[1]}' "$WORK/out.txt")
  read -r bu bs < "$WORK/time.txt"
  python3 -c "t=$tx; k=1e6/$TICK; print(f'{$tps:.0f} {($bu+$bs)*1e6/t:.2f} {($pg1-$pg0)*k/t:.2f} {($u1-$u0)*k/t:.2f} {($s1-$s0)*k/t:.2f} {($i1-$i0)*k/t:.2f}')"
}

{
  echo "# CPU per transaction, process by process: the hot-key cache against direct Postgres"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $CORES cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "- binary: $BIN ($("$BIN" --version 2>/dev/null || true))"
  echo "- pgbench: \`SELECT abalance FROM pgbench_accounts WHERE aid = :aid\`, aid ~ Zipf(1.1) over 1M rows (scale 10), -j 2, ${SECS} s per run, $REPS repetitions alternating the targets, medians; ${WARMUP} s of warm-up through the cache target per mode"
  echo "- µs per transaction: CPU time over the run (pgbench: its own user + system time; Postgres: every process of the cluster, reaped backends included; the middleman, PgBouncer or the proxy: /proc/PID/stat) and idle time of all cores (/proc/stat), divided by the transactions completed"
  echo "- ceiling: the TPS with the cores never idle, $CORES × 10⁶ / (pgbench + Postgres + proxy); proxy budget for 1.5×: $CORES × 10⁶ / (1.5 × direct TPS) − pgbench − Postgres, as measured for the cache target"
  echo
  echo "| mode | clients | target | TPS | vs direct | pgbench | Postgres | middleman (user + sys) | idle | ceiling TPS | hits |"
  echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for mode in $MODES; do
    for c in $CLIENTS; do
      pgbench -h 127.0.0.1 -p "$CACHE_PORT" -U postgres -n -f "$WORK/zipf.sql" -M "$mode" -c "$c" \
        -j 2 -T "$WARMUP" postgres >/dev/null 2>&1
      declare -A cols=()
      for r in $(seq 1 "$REPS"); do
        h0=$(cache_counter pgpolyglot_cache_hits_total); m0=$(cache_counter pgpolyglot_cache_misses_total)
        for target in direct pgbouncer pgpolyglot cache; do
          case $target in
            direct) line=$(measure "$PGPORT" "" "$mode" "$c") ;;
            pgbouncer) line=$(measure "$BPORT" "$BOUNCER_PID" "$mode" "$c") ;;
            pgpolyglot) line=$(measure "$PLAIN_PORT" "$PLAIN_PID" "$mode" "$c") ;;
            cache) line=$(measure "$CACHE_PORT" "$CACHE_PID" "$mode" "$c") ;;
          esac
          i=0
          for v in $line; do cols[$target,$i]+="$v "; i=$((i + 1)); done
        done
        h1=$(cache_counter pgpolyglot_cache_hits_total); m1=$(cache_counter pgpolyglot_cache_misses_total)
        cols[hits]+="$(python3 -c "h=$h1-$h0; m=$m1-$m0; print(f'{100*h/max(h+m,1):.1f}')") "
      done
      declare -A med=()
      for target in direct pgbouncer pgpolyglot cache; do
        for i in 0 1 2 3 4 5; do
          # shellcheck disable=SC2086
          med[$target,$i]=$(median ${cols[$target,$i]})
        done
      done
      # shellcheck disable=SC2086
      hits=$(median ${cols[hits]})
      for target in direct pgbouncer pgpolyglot cache; do
        python3 - "$mode" "$c" "$target" "$CORES" "$hits" "${med[direct,0]}" \
          "${med[$target,0]}" "${med[$target,1]}" "${med[$target,2]}" "${med[$target,3]}" \
          "${med[$target,4]}" "${med[$target,5]}" <<'PY'
import sys
mode, c, target, cores, hits = sys.argv[1:6]
direct_tps, tps, bench, pg, pu, ps, idle = map(float, sys.argv[6:])
cores = int(cores)
busy = bench + pg + pu + ps
ceiling = cores * 1e6 / busy
proxy = f"{pu + ps:.1f} ({pu:.1f} + {ps:.1f})" if target != "direct" else "—"
shown_hits = f"{hits} %" if target == "cache" else "—"
print(f"| {mode} | {c} | {target} | {tps:.0f} | {tps / direct_tps:.2f}× | {bench:.1f} | {pg:.1f} "
      f"| {proxy} | {idle:.1f} | {ceiling:.0f} ({ceiling / direct_tps:.2f}×) | {shown_hits} |")
if target == "cache":
    budget = cores * 1e6 / (1.5 * direct_tps) - bench - pg
    print(f"| {mode} | {c} | proxy budget for 1.5× | | | | | **{budget:.1f}** (spends {pu + ps:.1f}) | | | |")
PY
      done
      unset cols med
    done
  done
} > "$OUT"
