"""Benchmarks (figures, not tests). They write to a CDP database of their own (`cdp_bench`,
devtools/cdp_db.py), never to the dev stack's `cdp`: importing any benchmark module re-points the cdp_mongo
connection of this process (and of every process it starts) before anything connects."""

import os

from devtools.cdp_db import BENCH_DATABASE, CONN_VAR, use_database

if CONN_VAR not in os.environ:
    raise SystemExit(f"{CONN_VAR} is not set: run the benchmarks through scripts/benchmark.sh (scripts/env.sh)")
use_database(BENCH_DATABASE)
