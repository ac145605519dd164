#!/usr/bin/env bash
# Local services for development, the demo and the test suite, on loopback
# only, started idempotently: PostgreSQL 15 (the CRM source), FerretDB v1.24.2
# (the CDP MongoDB, built from the Go module proxy by tools/ferretdb, storing its
# data in a database of the same PostgreSQL cluster: FerretDB pushes equality
# filters down to PostgreSQL, while its SQLite backend scans whole collections) and an
# S3-compatible server (moto in server mode) with the CRM and CDP buckets, and the
# reference implementation of the CDP notes migrate API (devtools/cdp_notes_api.py,
# the HTTP writer's target; over the cdp_mongo connection's database).
#
#   scripts/services.sh up | down | status
#
# Data lives under .build/ (git-ignored). Ports come from scripts/env.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
# PostgreSQL runs as the `postgres` user, which may not be able to enter the checkout
# (a clone under a 0700 temp dir, say): its data, socket and log live outside it, in a
# directory of their own per checkout.
PG_STATE="${PG_STATE_DIR:-/var/tmp/crm-notes-migration-pg-$(printf %s "$ROOT" | sha1sum | cut -c1-12)}"
PGDATA="$PG_STATE/data"
PGRUN="$PG_STATE/run"
FERRET_BIN="$BUILD_DIR/ferretdb"
LOG_DIR="$BUILD_DIR/logs"

log() { printf '[services] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port name seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    port_open "$1" && return 0
    sleep 0.1
  done
  log "$2 did not open 127.0.0.1:$1 in $3 s; see $LOG_DIR"
  return 1
}

as_postgres() { (cd / && runuser -u postgres -- "$@"); }  # from /: it may not enter the checkout

pg_up() {
  if [ ! -x "$PG_BIN/pg_ctl" ]; then
    log "PostgreSQL 15 binaries missing: installing postgresql-15"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
  fi
  mkdir -p "$PG_STATE" "$LOG_DIR"
  chown postgres "$PG_STATE" && chmod 700 "$PG_STATE"
  as_postgres mkdir -p "$PGRUN"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    log "initdb $PGDATA"
    as_postgres mkdir -p -m 700 "$PGDATA"
    as_postgres "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    log "postgres already running on $CRM_PG_PORT"
  else
    as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_STATE/postgres.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $CRM_PG_PORT -k $PGRUN -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c TimeZone=UTC" >/dev/null
    log "postgres started on 127.0.0.1:$CRM_PG_PORT"
  fi
  local db
  for db in "$CRM_PG_DB" "$FERRETDB_PG_DB"; do
    as_postgres "$PG_BIN/psql" -h 127.0.0.1 -p "$CRM_PG_PORT" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
      as_postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$CRM_PG_PORT" -U postgres "$db"
  done
}

ferret_build() {
  if [ -x "$FERRET_BIN" ] && [ "$FERRET_BIN" -nt "$ROOT/tools/ferretdb/main.go" ] && [ "$FERRET_BIN" -nt "$ROOT/tools/ferretdb/go.mod" ]; then
    return 0
  fi
  log "building FerretDB v1.24.2 (tools/ferretdb) — first time takes a few minutes"
  (cd "$ROOT/tools/ferretdb" && go build -trimpath -o "$FERRET_BIN" .)
}

ferret_up() {
  if port_open "$CDP_MONGO_PORT"; then
    log "ferretdb already listening on $CDP_MONGO_PORT"
    return 0
  fi
  ferret_build
  mkdir -p "$LOG_DIR"
  # Go's default GC target (GOGC=100) made FerretDB spend about a third of a large read collecting
  # garbage: streaming a 71,000-note company took 9.4 s at 100 and 6.0-6.6 s at 800 (~190 MB resident).
  GOGC="${FERRETDB_GOGC:-800}" nohup "$FERRET_BIN" -listen "127.0.0.1:$CDP_MONGO_PORT" -handler postgresql \
    -postgresql-url "postgres://postgres@127.0.0.1:$CRM_PG_PORT/$FERRETDB_PG_DB" >"$LOG_DIR/ferretdb.log" 2>&1 &
  echo $! >"$BUILD_DIR/ferretdb.pid"
  wait_port "$CDP_MONGO_PORT" ferretdb 60
  log "ferretdb started on 127.0.0.1:$CDP_MONGO_PORT"
}

s3_up() {
  if port_open "$S3_PORT"; then
    log "s3 already listening on $S3_PORT"
  else
    mkdir -p "$LOG_DIR"
    # a fresh clone has no .venv yet: moto's server comes with the dev requirements
    [ -x "$VENV/bin/moto_server" ] || bash "$ROOT/scripts/bootstrap.sh"
    nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$LOG_DIR/s3.log" 2>&1 &
    echo $! >"$BUILD_DIR/s3.pid"
    wait_port "$S3_PORT" s3 60
    log "s3 (moto server) started on 127.0.0.1:$S3_PORT"
    # moto keeps objects in memory: a fresh server has no buckets. Create the crm_s3 and cdp_s3
    # connections' buckets (loopback endpoints only); the seeder also ensures them.
    "$VENV/bin/python" -m notes_migration.stores.s3_store ensure-buckets >>"$LOG_DIR/s3.log" 2>&1 ||
      { log "could not create the S3 buckets; see $LOG_DIR/s3.log"; return 1; }
    log "s3 buckets ready"
  fi
}

cdp_notes_api_up() {
  if port_open "$CDP_NOTES_API_PORT"; then
    log "cdp notes api already listening on $CDP_NOTES_API_PORT"
    return 0
  fi
  mkdir -p "$LOG_DIR"
  # devtools is importable through PYTHONPATH (scripts/env.sh puts the checkout root on it)
  nohup "$VENV/bin/python" -m devtools.cdp_notes_api --host 127.0.0.1 --port "$CDP_NOTES_API_PORT" \
    >"$LOG_DIR/cdp_notes_api.log" 2>&1 &
  echo $! >"$BUILD_DIR/cdp_notes_api.pid"
  wait_port "$CDP_NOTES_API_PORT" cdp_notes_api 60
  log "cdp notes api (reference implementation) started on 127.0.0.1:$CDP_NOTES_API_PORT"
}

stop_pid() { # name
  local f="$BUILD_DIR/$1.pid"
  if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
    kill "$(cat "$f")" && log "$1 stopped"
  fi
  rm -f "$f"
}

case "${1:-up}" in
up)
  pg_up
  ferret_up
  s3_up
  cdp_notes_api_up
  ;;
down)
  stop_pid cdp_notes_api
  stop_pid ferretdb
  stop_pid s3
  if [ -s "$PGDATA/PG_VERSION" ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 && log "postgres stopped" || true
  fi
  ;;
status)
  for p in "postgres:$CRM_PG_PORT" "ferretdb:$CDP_MONGO_PORT" "s3:$S3_PORT" "cdp_notes_api:$CDP_NOTES_API_PORT"; do
    if port_open "${p#*:}"; then echo "${p%%:*} up (127.0.0.1:${p#*:})"; else echo "${p%%:*} down"; fi
  done
  ;;
*)
  echo "usage: $0 up|down|status" >&2
  exit 2
  ;;
esac
