#!/usr/bin/env bash
# Runs the benchmarks (not tests) against the local services and prints their figures.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
"$VENV/bin/python" -m benchmarks.page_path "$@"
"$VENV/bin/python" -m benchmarks.relink
