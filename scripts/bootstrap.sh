#!/usr/bin/env bash
# Creates .venv and installs the pinned dev requirements and the logic package (again only
# when a requirements file, constraints.txt or pyproject.toml changed), then migrates the project-local
# Airflow metadata DB. Idempotent; safe to call before every command.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
mkdir -p "$BUILD_DIR" "$AIRFLOW_HOME"

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
stamp="$VENV/.requirements.sha256"
want="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "$ROOT/constraints.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[bootstrap] installing requirements (about a minute or two on a fresh machine)" >&2
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -r "$ROOT/requirements-dev.txt" -c "$ROOT/constraints.txt"
  # the logic package itself, editable: tests, scripts and Airflow import it as `notes_migration`
  "$VENV/bin/pip" install -q --no-deps -e "$ROOT"
  echo "$want" >"$stamp"
fi
if [ ! -s "$AIRFLOW_HOME/airflow.db" ] || [ "$ROOT/constraints.txt" -nt "$AIRFLOW_HOME/airflow.db" ]; then
  echo "[bootstrap] airflow db migrate ($AIRFLOW_HOME)" >&2
  "$VENV/bin/airflow" db migrate >"$BUILD_DIR/airflow-db-migrate.log" 2>&1 ||
    { tail -20 "$BUILD_DIR/airflow-db-migrate.log" >&2; exit 1; }
  touch "$AIRFLOW_HOME/airflow.db"
fi
# The test tier's DOMPurify oracle (tools/dompurify: pinned dompurify + jsdom, package-lock.json), installed with
# `npm ci` again only when its lock changed. Needs node >= 20 and the npm registry.
oracle="$ROOT/tools/dompurify"
oracle_stamp="$oracle/node_modules/.package-lock.sha256"
oracle_want="$(sha256sum "$oracle/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$oracle_stamp" 2>/dev/null)" != "$oracle_want" ]; then
  command -v npm >/dev/null || { echo "[bootstrap] npm (node >= 20) is needed for tools/dompurify" >&2; exit 1; }
  echo "[bootstrap] npm ci in tools/dompurify (DOMPurify oracle)" >&2
  (cd "$oracle" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$oracle_want" >"$oracle_stamp"
fi
