# Sourced by the shell benchmarks (benches/instructions/run.sh, benches/cpu/run.sh): a work
# directory and a throwaway PostgreSQL with pgbench's tables at scale 10, stopped and removed
# on exit. As root, Postgres runs as the postgres user (initdb refuses root).
#
#   WORK_PREFIX=name . benches/throwaway_pg.sh   # then: $WORK, $PGPORT, $PG_BIN, as_pg,
#                                                 # free_port; extra postgresql.conf lines in
#                                                 # $PG_EXTRA_CONF; more cleanup in an on_exit() defined before sourcing

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
declare -F on_exit >/dev/null || on_exit() { :; }
WORK=$(mktemp -d "/tmp/${WORK_PREFIX:-pgpolyglot-bench}-XXXXXX")
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
PGPORT=$(free_port)
cleanup() {
  on_exit
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
