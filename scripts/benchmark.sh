#!/usr/bin/env bash
# Runs the benchmarks (not tests) against the local services: every figure from one run, printed as JSON
# and a table, and saved under .build/ (git-ignored). Arguments go to benchmarks.run (--no-seed, --rounds N).
#   scripts/benchmark.sh --stack [args]   end to end under a real scheduler instead (benchmarks.stack: LocalExecutor
#                                         and Celery with two workers; .build/benchmark_stack.json)
#   scripts/benchmark.sh --writers [--rounds N]   the page path of CID 8000 through each writer (mongo, http)
#   scripts/benchmark.sh --fleet [args]   a 130-CID fleet (~21,000 notes) through crm_notes_rollout under a real
#                                         scheduler (benchmarks.fleet; .build/benchmark_fleet.json)
#   scripts/benchmark.sh --run-cost [args]  CPU seconds and tasks of one small CID's run under a real scheduler, split
#                                         by Airflow process (benchmarks.run_cost; .build/benchmark_run_cost.json)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
if [ "${1:-}" = --stack ]; then
  shift
  exec "$VENV/bin/python" -m benchmarks.stack "$@"
fi
if [ "${1:-}" = --writers ]; then  # the page path through the Mongo writer and the HTTP writer (PRD D-1)
  shift
  exec "$VENV/bin/python" -m benchmarks.page_path --writers "$@"
fi
if [ "${1:-}" = --fleet ]; then
  shift
  exec "$VENV/bin/python" -m benchmarks.fleet "$@"
fi
if [ "${1:-}" = --run-cost ]; then
  shift
  exec "$VENV/bin/python" -m benchmarks.run_cost "$@"
fi
"$VENV/bin/python" -m benchmarks.run "$@"
