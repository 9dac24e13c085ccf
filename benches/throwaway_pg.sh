# Sourced by the shell benchmarks (benches/instructions/run.sh, benches/cpu/run.sh,
# benches/cpu/budget.sh): a work directory and a throwaway PostgreSQL with pgbench's tables at scale 10, stopped and removed
# on exit. As root, Postgres runs as the postgres user (initdb refuses root).
#
#   WORK_PREFIX=name . benches/throwaway_pg.sh   # then: $WORK, $PGPORT, $PG_BIN, as_pg,
#                                                 # free_port, wait_for_pg, median,
#                                                 # start_pgbouncer (stopped on exit),
#                                                 # write_cache_policy; extra postgresql.conf lines in
#                                                 # $PG_EXTRA_CONF; more cleanup in an on_exit() defined before sourcing

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
# wait_for_pg PORT [TRIES]: until `select 1` answers on PORT (every 0.2 s); fails after TRIES.
wait_for_pg() {
  for _ in $(seq 1 "${2:-100}"); do
    psql -h 127.0.0.1 -p "$1" -U postgres -c "select 1" postgres >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
declare -F on_exit >/dev/null || on_exit() { :; }
WORK=$(mktemp -d "/tmp/${WORK_PREFIX:-pgpolyglot-bench}-XXXXXX")
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
PGPORT=$(free_port)
cleanup() {
  on_exit
  [ -f "$WORK/pgbouncer.pid" ] && kill "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null || true
  as_pg "$PG_BIN/pg_ctl -D $WORK/data -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
as_pg "$PG_BIN/initdb -D $WORK/data -A trust -U postgres" >/dev/null
cat >> "$WORK/data/postgresql.conf" <<EOC
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
fsync = off
shared_buffers = 256MB
${PG_EXTRA_CONF:-}
EOC
as_pg "$PG_BIN/pg_ctl -D $WORK/data -l $WORK/pg.log -w start" >/dev/null
pgbench -h 127.0.0.1 -p "$PGPORT" -U postgres -i -s 10 -q postgres >/dev/null 2>&1

# start_pgbouncer PORT: PgBouncer (session pooling, trust) in front of this cluster on PORT,
# run as the postgres user when root; sets BOUNCER_PID. Stopped on exit.
start_pgbouncer() {
  cat > "$WORK/pgbouncer.ini" <<EOC
[databases]
postgres = host=127.0.0.1 port=$PGPORT dbname=postgres user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = session
max_client_conn = 500
default_pool_size = 100
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
EOC
  echo '"postgres" ""' > "$WORK/userlist.txt"
  [ "$(id -u)" = 0 ] && chown postgres "$WORK/pgbouncer.ini" "$WORK/userlist.txt"
  as_pg "pgbouncer -d $WORK/pgbouncer.ini"
  wait_for_pg "$1" || { echo "pgbouncer did not start: $(cat "$WORK/pgbouncer.log")" >&2; exit 1; }
  BOUNCER_PID=$(cat "$WORK/pgbouncer.pid")
}

# write_cache_policy FILE: the load benchmark's cache policy (benches/load/targets.rs,
# CACHE_POLICY): pgbench_accounts in memory, every key read once in 5 minutes placed.
write_cache_policy() {
  cat > "$1" <<'EOP'
tables = ["public.pgbench_accounts"]

[cache]
store = "memory"
promote_after = 1
window = "5m"
demote_after_idle = "10m"
max_keys = 200000
max_bytes = "512MiB"
max_staleness = "250ms"
EOP
}
