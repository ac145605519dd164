#!/usr/bin/env bash
# Runs the benchmarks (not tests) against the local services and prints their figures.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
"$ROOT/scripts/services.sh" up
source "$ROOT/scripts/env.sh"
cd "$ROOT"
"$VENV/bin/python" -m benchmarks.page_path "$@"
