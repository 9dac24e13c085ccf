#!/usr/bin/env bash
# CPU time the middleman spends per transaction: pgpolyglot (no policy: pure passthrough plus
# its statement and key statistics) against PgBouncer (session pooling), same Postgres, same
# pgbench runs, alternated.
#
#   cargo build --release && bash benches/cpu/run.sh [out.md]
#
# Throughput on a 2-core machine shared by pgbench, Postgres and the middleman swings by
# ±10 % from run to run; the CPU each middleman burns per transaction (user and system time
# from /proc/PID/stat, divided by the transactions pgbench completed) moves far less, and
# says which of the two costs the machine more. Needs pgbench, psql, pgbouncer and
# PostgreSQL's server binaries; as root, Postgres and PgBouncer run as the postgres user
# (neither runs as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/pgpolyglot}
OUT=${1:-/dev/stdout}
SECS=${SECS:-10}
REPS=${REPS:-3}
MODES=${MODES:-simple extended prepared}
CLIENTS=${CLIENTS:-8 32}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v pgbouncer >/dev/null || { echo "pgbouncer is needed" >&2; exit 1; }
TICK=$(getconf CLK_TCK)

PROXY_PID=""
on_exit() { [ -n "$PROXY_PID" ] && kill -INT "$PROXY_PID" 2>/dev/null || true; }
WORK_PREFIX=pgpolyglot-cpu PG_EXTRA_CONF="max_connections = 200" . benches/throwaway_pg.sh
BPORT=$(free_port); PPORT=$(free_port); HTTP=$(free_port)

start_pgbouncer "$BPORT"

mkdir -p "$WORK/nopolicy"
"$BIN" serve --listen "127.0.0.1:$PPORT" --upstream "postgres://postgres@127.0.0.1:$PGPORT/postgres" \
  --policies "$WORK/nopolicy" --http "127.0.0.1:$HTTP" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
wait_for_pg "$PPORT" || { echo "proxy did not start: $(cat "$WORK/proxy.log")" >&2; exit 1; }

cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

# measure PID PORT MODE CLIENTS -> "tps user_us sys_us" per transaction
measure() {
  local u0 s0 u1 s1 out tps tx
  read -r u0 s0 < <(cpu_ticks "$1")
  out=$(pgbench -h 127.0.0.1 -p "$2" -U postgres -n -S -M "$3" -c "$4" -j 2 -T "$SECS" postgres 2>&1)
  read -r u1 s1 < <(cpu_ticks "$1")
  tps=$(echo "$out" | awk '/without initial connection time/ {print $3}')
  tx=$(echo "$out" | awk '/actually processed/ {split($NF, a, "/"); print a[1]}')
  python3 -c "t=$tx; k=1e6/$TICK; print(f'{$tps:.0f} {($u1-$u0)*k/t:.2f} {($s1-$s0)*k/t:.2f}')"
}


{
  echo "# CPU per transaction: pgpolyglot against PgBouncer"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "- binary: $BIN ($("$BIN" --version 2>/dev/null || true)); $(pgbouncer --version | head -1)"
  echo "- pgbench -S (scale 10), -j 2, ${SECS} s per run, $REPS repetitions alternating the two; medians"
  echo "- CPU: the middleman's user and system time (/proc/PID/stat) over the run / transactions completed"
  echo
  echo "| mode | clients | PgBouncer TPS | pgpolyglot TPS | TPS ratio | PgBouncer µs/tx (user + sys) | pgpolyglot µs/tx (user + sys) | CPU ratio |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for mode in $MODES; do
    for c in $CLIENTS; do
      bt=(); bu=(); bs=(); pt=(); pu=(); ps=()
      for r in $(seq 1 "$REPS"); do
        read -r t u s < <(measure "$BOUNCER_PID" "$BPORT" "$mode" "$c"); bt+=("$t"); bu+=("$u"); bs+=("$s")
        read -r t u s < <(measure "$PROXY_PID" "$PPORT" "$mode" "$c"); pt+=("$t"); pu+=("$u"); ps+=("$s")
      done
      python3 - "$mode" "$c" "$(median "${bt[@]}")" "$(median "${pt[@]}")" "$(median "${bu[@]}")" \
        "$(median "${bs[@]}")" "$(median "${pu[@]}")" "$(median "${ps[@]}")" <<'PY'
import sys
mode, c = sys.argv[1], sys.argv[2]
bt, pt, bu, bs, pu, ps = map(float, sys.argv[3:])
print(f"| {mode} | {c} | {bt:.0f} | {pt:.0f} | {pt/bt:.2f}× | {bu+bs:.1f} ({bu:.1f} + {bs:.1f}) "
      f"| {pu+ps:.1f} ({pu:.1f} + {ps:.1f}) | {(pu+ps)/(bu+bs):.2f}× |")
PY
    done
  done
} > "$OUT"
