#!/usr/bin/env bash
# A real local Airflow for this project: api-server, scheduler, dag-processor and triggerer (and, with
# `--executor celery`, Redis and Celery workers), every port on loopback, the metadata DB in its own
# database of the local PostgreSQL cluster, the connections, variables and pools of
# airflow_settings.yaml loaded, and the DAGs of dags/ unpaused.
#
#   scripts/airflow.sh up [--executor local|celery]   start what is not running (idempotent); another executor than
#                                                     the running one restarts only the scheduler and its workers
#   scripts/airflow.sh down                           stop the processes this script started (pid files)
#   scripts/airflow.sh status                         what runs, where
#   scripts/airflow.sh logs [component]               tail the logs (all, or api-server, scheduler, worker-1, …)
#
# Environment (defaults in brackets; each port is bound on 127.0.0.1 only):
#   AIRFLOW_API_PORT [28080]            api-server (UI, REST API, execution API)
#   AIRFLOW_WORKER_LOG_PORT [28793]     log server of the LocalExecutor's tasks
#   AIRFLOW_TRIGGER_LOG_PORT [28794]    log server of the triggerer
#   AIRFLOW_CELERY_LOG_PORT [28795]     log server of Celery worker 1 (worker N: this + N - 1)
#   AIRFLOW_REDIS_PORT [26379]          Redis, the Celery broker (no persistence)
#   AIRFLOW_CELERY_WORKERS [2]          Celery workers, hostnames worker-1 … worker-N
#   AIRFLOW_CELERY_CONCURRENCY [2]      task slots per Celery worker
#   AIRFLOW_DB_NAME [airflow]           metadata database in the local cluster (127.0.0.1:$CRM_PG_PORT)
#   AIRFLOW_STACK_DIR [.build/stack]    pid files, logs, AIRFLOW_HOME, generated secrets and passwords
#   AIRFLOW_STACK_FRESH_DB [0]          1: drop and recreate the metadata DB on `up` (when nothing runs)
#   AIRFLOW_UI_USERS [admin:admin,ops:user]   SimpleAuthManager users (user:role)
#   AIRFLOW_SEED_DEMO [1]               0: do not seed the demo CIDs 100 and 5000 on `up`
#   AIRFLOW_UP_TIMEOUT [180]            seconds `up` waits for health, parsing and workers
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-up}"
[ $# -gt 0 ] && shift
EXECUTOR=""
while [ $# -gt 0 ]; do
  case "$1" in
  --executor) EXECUTOR="${2:?--executor local|celery}"; shift 2 ;;
  --executor=*) EXECUTOR="${1#*=}"; shift ;;
  *) [ "$cmd" = logs ] && break; echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

if [ "$cmd" = up ]; then
  "$ROOT/scripts/bootstrap.sh"
  "$ROOT/scripts/services.sh" up
fi
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
cd "$ROOT"
if [ "$cmd" = up ]; then
  # the demo CIDs (100, 5000; flag ON in airflow_settings.yaml), seeded once: a fresh machine can trigger CID 100
  # straight away. Never reseeded here (a reseed wipes the CID's CDP notes): `python -m devtools.seed --demo`.
  if [ "${AIRFLOW_SEED_DEMO:-1}" != 0 ]; then  # the stack test tier seeds its own CIDs (AIRFLOW_SEED_DEMO=0)
    "$VENV/bin/python" -m devtools.seed --demo --if-missing >"$BUILD_DIR/seed-demo.log" 2>&1 ||
      { echo "[airflow] seeding the demo CIDs failed: see .build/seed-demo.log" >&2; exit 1; }
  fi
fi

STACK_DIR="${AIRFLOW_STACK_DIR:-$BUILD_DIR/stack}"
PID_DIR="$STACK_DIR/pids"
LOGS="$STACK_DIR/logs"
API_PORT="${AIRFLOW_API_PORT:-28080}"
WORKER_LOG_PORT="${AIRFLOW_WORKER_LOG_PORT:-28793}"
TRIGGER_LOG_PORT="${AIRFLOW_TRIGGER_LOG_PORT:-28794}"
CELERY_LOG_PORT="${AIRFLOW_CELERY_LOG_PORT:-28795}"
REDIS_PORT="${AIRFLOW_REDIS_PORT:-26379}"
WORKERS="${AIRFLOW_CELERY_WORKERS:-2}"
CONCURRENCY="${AIRFLOW_CELERY_CONCURRENCY:-2}"
DB_NAME="${AIRFLOW_DB_NAME:-airflow}"
UP_TIMEOUT="${AIRFLOW_UP_TIMEOUT:-180}"
PSQL="${PG_BIN:-/usr/lib/postgresql/15/bin}/psql"
BASE_URL="http://127.0.0.1:$API_PORT"

log() { printf '[airflow] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() { [ -s "$PID_DIR/$1.pid" ] && kill -0 "$(cat "$PID_DIR/$1.pid")" 2>/dev/null; }
components() { ls "$PID_DIR" 2>/dev/null | sed -n 's/\.pid$//p'; }

# --------------------------------------------------------------------------- the environment of every process
# The metadata DB driver: SQLAlchemy's psycopg (3) dialect when psycopg is installed (Airflow then tunes its
# engine for it), else psycopg2.
if "$VENV/bin/python" -c 'import psycopg' 2>/dev/null; then PG_DRIVER=psycopg; else PG_DRIVER=psycopg2; fi
DB_URL="postgresql+$PG_DRIVER://postgres@127.0.0.1:$CRM_PG_PORT/$DB_NAME"
export AIRFLOW_HOME="$STACK_DIR/home"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$DB_URL"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="$API_PORT"
export AIRFLOW__API__BASE_URL="$BASE_URL"
export AIRFLOW__API__WORKERS="${AIRFLOW__API__WORKERS:-1}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$BASE_URL/execution/"
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$WORKER_LOG_PORT"
export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT="$TRIGGER_LOG_PORT"
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW_UI_USERS:-admin:admin,ops:user}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=False
PASSWORDS_FILE="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$PASSWORDS_FILE"
export AIRFLOW__CELERY__BROKER_URL="redis://127.0.0.1:$REDIS_PORT/0"
export AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql+$PG_DRIVER://postgres@127.0.0.1:$CRM_PG_PORT/$DB_NAME"
export AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=False
# An idle scheduler loop sleeps this long (Airflow's default: 1 s) before it sees that a task finished:
# each step of a run waited up to that for its successor. 0.2 s cost the scheduler ~2 CPU-s more over a
# 100,000-note run and took its trigger-to-done from 25.0-26.6 s to 23.3-24.2 s (benchmarks.stack).
export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="${AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME:-0.2}"
AIRFLOW=("$VENV/bin/airflow")

secrets() { # one set per stack dir, shared by every process (JWTs signed by one are checked by the others)
  local f="$STACK_DIR/secrets.env"
  if [ ! -s "$f" ]; then
    mkdir -p "$STACK_DIR"
    (
      umask 077
      "$VENV/bin/python" - >"$f" <<'EOF'
import secrets

from cryptography.fernet import Fernet

print(f"AIRFLOW__API_AUTH__JWT_SECRET={secrets.token_urlsafe(48)}")
print(f"AIRFLOW__API__SECRET_KEY={secrets.token_urlsafe(32)}")
print(f"AIRFLOW__CORE__FERNET_KEY={Fernet.generate_key().decode()}")
EOF
    )
  fi
  set -a
  # shellcheck disable=SC1090
  source "$f"
  set +a
}

start() { # name command...: a session of its own (down stops its whole process group), output to its log
  local name="$1"
  shift
  if alive "$name"; then
    log "$name already running (pid $(cat "$PID_DIR/$name.pid"))"
    return 0
  fi
  mkdir -p "$PID_DIR" "$LOGS"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PID_DIR/$name.pid"
  log "$name started (pid $!, log $LOGS/$name.log)"
}

wait_for() { # what seconds command...
  local what="$1" secs="$2" i
  shift 2
  for ((i = 0; i < secs * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "timed out after ${secs} s waiting for $what; see $LOGS (scripts/airflow.sh logs)"
}

free_port() { # port what: refuse a port something else holds
  port_open "$1" && die "127.0.0.1:$1 ($2) is in use by another process; set its port variable (see $0)"
  return 0
}

# --------------------------------------------------------------------------- up
metadata_db() {
  local psql=("$PSQL" -h 127.0.0.1 -p "$CRM_PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
  if [ "${AIRFLOW_STACK_FRESH_DB:-0}" = 1 ]; then
    [ -n "$(running)" ] && die "AIRFLOW_STACK_FRESH_DB=1 but the stack in $STACK_DIR runs; scripts/airflow.sh down first"
    log "fresh metadata DB $DB_NAME"
    "${psql[@]}" -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)"
    rm -f "$STACK_DIR/migrated"
  fi
  if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
    "${psql[@]}" -c "CREATE DATABASE \"$DB_NAME\""
    rm -f "$STACK_DIR/migrated"
  fi
  local want
  want="$DB_URL $("$VENV/bin/pip" show apache-airflow-core 2>/dev/null | sed -n 's/^Version: //p')"
  if [ "$(cat "$STACK_DIR/migrated" 2>/dev/null)" != "$want" ]; then
    log "airflow db migrate ($DB_NAME)"
    mkdir -p "$LOGS"
    "${AIRFLOW[@]}" db migrate >"$LOGS/db-migrate.log" 2>&1 || { tail -20 "$LOGS/db-migrate.log" >&2; exit 1; }
    echo "$want" >"$STACK_DIR/migrated"
  fi
}

log_server() { # name port: Airflow's log server app, bound to loopback (its built-in launcher binds every interface)
  alive "$1" || free_port "$2" "$1"
  start "$1" "$VENV/bin/python" -m uvicorn --factory airflow.utils.serve_logs.log_server:create_app \
    --host 127.0.0.1 --port "$2" --no-access-log
}

redis_up() {
  if ! command -v redis-server >/dev/null; then
    log "redis-server missing: installing Debian's redis-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  alive redis || free_port "$REDIS_PORT" redis
  start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes --save "" --appendonly no \
    --dir "$STACK_DIR" --daemonize no
  wait_for "redis on 127.0.0.1:$REDIS_PORT" 30 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping
}

healthy() { # every component the api-server's health endpoint reports is healthy
  curl -fsS "$BASE_URL/api/v2/monitor/health" | "$VENV/bin/python" -c '
import json, sys
h = json.load(sys.stdin)
sys.exit(0 if all(h.get(k, {}).get("status") == "healthy" for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")) else 1)'
}

celery_ready() { grep -q "worker-$1@.* ready\.\|celery@worker-$1 ready\." "$LOGS/worker-$1.log"; }

up() {
  local executor="$EXECUTOR"
  [ -n "$executor" ] || { [ -n "$(running)" ] && executor="$(cat "$STACK_DIR/executor")"; } || executor=local
  case "$executor" in local | LocalExecutor) executor=local ;; celery | CeleryExecutor) executor=celery ;; *) die "--executor local|celery" ;; esac
  local was
  was="$(cat "$STACK_DIR/executor" 2>/dev/null || true)"
  if [ -n "$(running)" ] && [ "$was" != "$executor" ]; then
    # only the executor's side restarts: api-server, dag-processor and triggerer do not depend on it
    log "switching the executor $was → $executor: the scheduler and its workers restart"
    # shellcheck disable=SC2046
    stop scheduler $(components | grep -E '^(worker-|redis$)' || true)
  fi
  mkdir -p "$STACK_DIR" "$AIRFLOW_HOME" "$LOGS"
  echo "$executor" >"$STACK_DIR/executor"
  secrets
  metadata_db
  "$VENV/bin/python" "$ROOT/scripts/local_settings.py" load

  alive api-server || free_port "$API_PORT" api-server
  start api-server "${AIRFLOW[@]}" api-server --host 127.0.0.1 --port "$API_PORT"
  start dag-processor "${AIRFLOW[@]}" dag-processor
  start triggerer "${AIRFLOW[@]}" triggerer --skip-serve-logs
  log_server trigger-log-server "$TRIGGER_LOG_PORT"
  if [ "$executor" = celery ]; then
    export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
    redis_up
    start scheduler "${AIRFLOW[@]}" scheduler --skip-serve-logs
    local i
    for ((i = 1; i <= WORKERS; i++)); do
      log_server "worker-$i-log-server" "$((CELERY_LOG_PORT + i - 1))"
      # distinct task-instance hostnames on one machine: [core] hostname_callable reads AIRFLOW_WORKER_HOSTNAME
      start "worker-$i" env AIRFLOW_WORKER_HOSTNAME="worker-$i" \
        AIRFLOW__CORE__HOSTNAME_CALLABLE=local_settings.hostname PYTHONPATH="$ROOT/scripts:$PYTHONPATH" \
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$((CELERY_LOG_PORT + i - 1))" \
        "${AIRFLOW[@]}" celery worker --celery-hostname "worker-$i" --concurrency "$CONCURRENCY" --skip-serve-logs
    done
  else
    export AIRFLOW__CORE__EXECUTOR=LocalExecutor
    log_server worker-log-server "$WORKER_LOG_PORT"
    start scheduler "${AIRFLOW[@]}" scheduler --skip-serve-logs
  fi

  wait_for "the api-server on $BASE_URL" "$UP_TIMEOUT" curl -fsS "$BASE_URL/api/v2/version"
  wait_for "scheduler, triggerer and dag-processor heartbeats ($BASE_URL/api/v2/monitor/health)" "$UP_TIMEOUT" healthy
  "$VENV/bin/python" "$ROOT/scripts/local_settings.py" unpause --dags-folder "$AIRFLOW__CORE__DAGS_FOLDER" \
    --timeout "$UP_TIMEOUT" || die "the DAGs of $AIRFLOW__CORE__DAGS_FOLDER did not all parse (see above)"
  if [ "$executor" = celery ]; then
    for ((i = 1; i <= WORKERS; i++)); do wait_for "Celery worker-$i" "$UP_TIMEOUT" celery_ready "$i"; done
  fi
  wait_for "the password file $PASSWORDS_FILE" 30 test -s "$PASSWORDS_FILE"
  local failed
  failed="$(for c in $(components); do alive "$c" || echo "$c"; done)"
  [ -z "$failed" ] || die "exited: $failed; see $LOGS"
  cat <<EOF
Airflow $("$VENV/bin/pip" show apache-airflow-core 2>/dev/null | sed -n 's/^Version: //p') is up ($executor executor, metadata DB $DB_NAME on 127.0.0.1:$CRM_PG_PORT)
  UI and REST API   $BASE_URL
  Ops view          $BASE_URL/plugin/crm-notes-migration
  users             ${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS} (user:role)
  passwords         $PASSWORDS_FILE
  token             curl -s -X POST $BASE_URL/auth/token -H 'Content-Type: application/json' -d '{"username": "admin", "password": "…"}'
  logs              scripts/airflow.sh logs [$(components | tr '\n' ' ' | sed 's/ $//')]
  stop              scripts/airflow.sh down
EOF
}

running() { for c in $(components); do alive "$c" && echo "$c"; done; }

# --------------------------------------------------------------------------- down / status / logs
down() {
  # shellcheck disable=SC2046
  stop $(components)
}

stop() { # components...: SIGTERM to each one's process group, SIGKILL after 30 s
  local c pid i
  for c in "$@"; do
    pid="$(cat "$PID_DIR/$c.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for c in "$@"; do
    pid="$(cat "$PID_DIR/$c.pid")"
    for ((i = 0; i < 60; i++)); do
      kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 -- "-$pid" 2>/dev/null; then
      log "$c did not stop in 30 s: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$PID_DIR/$c.pid"
    log "$c stopped"
  done
}

status() {
  local c any=0
  for c in $(components); do
    any=1
    if alive "$c"; then echo "$c up (pid $(cat "$PID_DIR/$c.pid"))"; else echo "$c down (stale pid file)"; fi
  done
  [ "$any" = 1 ] || { echo "not running ($STACK_DIR)"; return 0; }
  echo "executor $(cat "$STACK_DIR/executor" 2>/dev/null), UI $BASE_URL, passwords $PASSWORDS_FILE"
  curl -fsS "$BASE_URL/api/v2/monitor/health" 2>/dev/null && echo || echo "api-server not answering on $BASE_URL"
}

logs() {
  if [ $# -gt 0 ]; then
    tail -n 100 -F "$LOGS/$1.log"
  else
    tail -n 20 -F "$LOGS"/*.log
  fi
}

case "$cmd" in
up) up ;;
down) down ;;
status) status ;;
logs) logs "$@" ;;
*) echo "usage: $0 up [--executor local|celery] | down | status | logs [component]" >&2; exit 2 ;;
esac
