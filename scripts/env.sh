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

export AIRFLOW_HOME="${AIRFLOW_HOME:-$BUILD_DIR/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
export AIRFLOW__CORE__UNIT_TEST_MODE="${AIRFLOW__CORE__UNIT_TEST_MODE:-False}"
# the logic package `notes_migration` is installed (editable) into .venv by bootstrap.sh; the
# checkout root makes the dev-only tests.support and benchmarks importable by the scripts
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# Local connections (the same values as airflow_settings.yaml; a test keeps
# them in step). Export your own AIRFLOW_CONN_* before calling a script to use
# other servers.
export AIRFLOW_CONN_CRM_POSTGRES="${AIRFLOW_CONN_CRM_POSTGRES:-{\"conn_type\": \"postgres\", \"host\": \"127.0.0.1\", \"port\": $CRM_PG_PORT, \"login\": \"postgres\", \"schema\": \"$CRM_PG_DB\"}}"
export AIRFLOW_CONN_CDP_MONGO="${AIRFLOW_CONN_CDP_MONGO:-{\"conn_type\": \"mongo\", \"host\": \"127.0.0.1\", \"port\": $CDP_MONGO_PORT, \"schema\": \"cdp\"}}"
export AIRFLOW_CONN_CRM_S3="${AIRFLOW_CONN_CRM_S3:-{\"conn_type\": \"aws\", \"login\": \"local\", \"password\": \"local-secret\", \"extra\": {\"endpoint_url\": \"http://127.0.0.1:$S3_PORT\", \"region_name\": \"us-east-1\", \"bucket\": \"crm-assets\"}}}"
export AIRFLOW_CONN_CDP_S3="${AIRFLOW_CONN_CDP_S3:-{\"conn_type\": \"aws\", \"login\": \"local\", \"password\": \"local-secret\", \"extra\": {\"endpoint_url\": \"http://127.0.0.1:$S3_PORT\", \"region_name\": \"us-east-1\", \"bucket\": \"cdp-files\"}}}"
# Alerting (issue 4). Loopback only: the Slack webhook URL points at a local
# sink (nothing listens there unless you start one, so an alert is logged as
# undeliverable); PagerDuty's client only speaks https to the SaaS, so the local
# connection carries `"deliver": false` and alerts are logged instead of sent.
export ALERT_SINK_PORT="${ALERT_SINK_PORT:-9337}"
export AIRFLOW_CONN_SLACK_ALERTS="${AIRFLOW_CONN_SLACK_ALERTS:-{\"conn_type\": \"slackwebhook\", \"password\": \"http://127.0.0.1:$ALERT_SINK_PORT/slack/local-dev\", \"extra\": {\"timeout\": 10}}}"
export AIRFLOW_CONN_PAGERDUTY_EVENTS="${AIRFLOW_CONN_PAGERDUTY_EVENTS:-{\"conn_type\": \"pagerduty_events\", \"password\": \"local-dev-routing-key\", \"extra\": {\"deliver\": false}}}"
