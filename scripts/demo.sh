#!/usr/bin/env bash
# The project's one run command: installs, starts the local services, seeds the
# demo CIDs (100 and 5000), turns the flag on for them, runs crm_notes_migration
# for one demo CID (default 100; `scripts/demo.sh 5000` for the large one) and
# prints its final status JSON.
set -euo pipefail
CID="${1:-100}"
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
CLI=("$VENV/bin/python" -m crm_notes_migration_ops.cli)
"$VENV/bin/python" -m devtools.seed --demo >&2
"$VENV/bin/airflow" variables set crm_notes_migration_enabled '[100, 5000]' >&2
COMPANY="$("$VENV/bin/python" -c "from devtools.seed import company_for; print(company_for($CID))")"
"${CLI[@]}" run --cid "$CID" --company-sso-id "$COMPANY" >&2
"${CLI[@]}" status --cid "$CID"
