#!/usr/bin/env bash
# Runs the benchmarks (not tests) against the local services: every figure from one run, printed as JSON
# and a table, and saved under .build/ (git-ignored). Arguments go to benchmarks.run (--no-seed, --rounds N).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
"$VENV/bin/python" -m benchmarks.run "$@"
