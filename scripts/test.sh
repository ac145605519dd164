#!/usr/bin/env bash
# The project's one test command: installs what it needs, checks lint, format and types, starts the
# local services on loopback, and runs the suite. Extra args go to pytest.
#
#   scripts/test.sh                 everything (what .ci/run runs): every tier, the real-scheduler
#                                   (stack) and fault tiers included
#   scripts/test.sh -m unit         the pure core only: seconds, no services started
#   scripts/test.sh -m "unit or dags"   also DAG integrity, still without services
set -euo pipefail

# Tiers that need no server: when -m selects only these, the services are not started.
marker=""
prev=""
for arg in "$@"; do
  [ "$prev" = "-m" ] && marker="$arg"
  prev="$arg"
done
if [[ -n "$marker" && "$marker" =~ ^(unit|dags)([[:space:]]+or[[:space:]]+(unit|dags))*$ ]]; then
  export PREPARE_SERVICES=0
fi
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"

echo "[test] ruff check, ruff format --check, mypy" >&2
"$VENV/bin/ruff" check --quiet .
"$VENV/bin/ruff" format --check --quiet .
"$VENV/bin/mypy" --no-error-summary
exec "$VENV/bin/python" -m pytest "$@"
