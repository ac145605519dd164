#!/usr/bin/env bash
# The project's one test command: installs what it needs, starts the local
# services on loopback, and runs the whole suite. Extra args go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
exec "$VENV/bin/python" -m pytest "$@"
