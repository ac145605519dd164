# Sourced by every project script: paths, loopback ports, the project-local
# AIRFLOW_HOME and the local connections. Values already in the environment win,
# so the same scripts can point at another CRM PostgreSQL / MongoDB / S3.
# shellcheck shell=bash
ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export ROOT
export BUILD_DIR="${BUILD_DIR:-$ROOT/.build}"
export VENV="${VENV:-$ROOT/.venv}"

export CRM_PG_PORT="${CRM_PG_PORT:-54329}"
export CRM_PG_DB="${CRM_PG_DB:-crm}"
export CDP_MONGO_PORT="${CDP_MONGO_PORT:-27117}"
# FerretDB stores its data in this database of the same local PostgreSQL cluster
export FERRETDB_PG_DB="${FERRETDB_PG_DB:-ferretdb}"
export S3_PORT="${S3_PORT:-9333}"
# the reference implementation of the CDP notes migrate API (devtools/cdp_notes_api.py; the HTTP writer's target)
export CDP_NOTES_API_PORT="${CDP_NOTES_API_PORT:-9340}"

export AIRFLOW_HOME="${AIRFLOW_HOME:-$BUILD_DIR/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
# 8 task slots; a rollout lane waits deferred (in the triggerer), so it holds none of them
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-8}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
export AIRFLOW__CORE__UNIT_TEST_MODE="${AIRFLOW__CORE__UNIT_TEST_MODE:-False}"
# the logic package `notes_migration` is installed (editable) into .venv by bootstrap.sh; the
# checkout root makes the dev-only devtools (seeders, stack manager) and benchmarks importable by the scripts
export PYTHONPATH="$ROOT:$ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}"  # + the Ops package (CLI) outside Airflow

# Local connections: generated from airflow_settings.yaml (the single source of local settings) by
# scripts/local_settings.py, with the loopback ports above. An AIRFLOW_CONN_* exported before calling
# a script wins (use other servers that way). The loader needs PyYAML: the venv's python, else the
# system one (before bootstrap.sh created the venv nothing needs a connection).
export ALERT_SINK_PORT="${ALERT_SINK_PORT:-9337}"
_settings_py="$VENV/bin/python"
[ -x "$_settings_py" ] || _settings_py="$(command -v python3 || true)"
if [ -n "$_settings_py" ] && _settings_exports="$("$_settings_py" "$ROOT/scripts/local_settings.py" env 2>/dev/null)"; then
  eval "$_settings_exports"
elif [ -x "$VENV/bin/python" ]; then
  echo "[env] could not read $ROOT/airflow_settings.yaml: no AIRFLOW_CONN_* exported" >&2
fi
unset _settings_py _settings_exports
