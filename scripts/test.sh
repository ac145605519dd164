#!/usr/bin/env bash
# The project's one test command: installs what it needs, starts the local
# services on loopback, and runs the whole suite. Extra args go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
"$ROOT/scripts/services.sh" up
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
