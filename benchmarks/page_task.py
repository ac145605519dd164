"""One task's work in a fresh process, reporting its peak RSS (VmHWM): what a mapped task costs in memory.

    python -m benchmarks.page_task pages --job-id J --pages '[{...}, ...]'   # migrate_page of these pages
    python -m benchmarks.page_task coverage --job-id J                       # coverage step + plan_pages
    python -m benchmarks.page_task baseline                                  # imports and connections only

Prints one JSON object: {"vm_hwm_kib": …, "vm_rss_kib": …, "seconds": …, …}. The parent
(benchmarks.page_path) creates the job; this process only runs the step, as an Airflow worker would.
"""

from __future__ import annotations

import argparse
import json
import logging
import time


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["pages", "coverage", "baseline"])
    parser.add_argument("--job-id")
    parser.add_argument("--pages", default="[]")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # per-note event lines are not what we measure here

    from notes_migration.run import batch, coverage, plan  # the imports a task process makes
    from notes_migration.stores.connections import cdp_database, crm_connection

    db = cdp_database()
    out: dict = {"mode": args.mode}
    with crm_connection() as crm:
        db.command("ping")
        out["rss_before_kib"] = _status_kib("VmRSS")
        started = time.perf_counter()
        if args.mode == "pages":
            rows = 0
            for page in json.loads(args.pages):
                rows += batch.migrate_page(crm, db, args.job_id, page)["rows"]
            out["rows"] = rows
        elif args.mode == "coverage":
            coverage.run_coverage(crm, db, args.job_id)
            out["coverage_s"] = round(time.perf_counter() - started, 3)
            out["pages"] = len(plan.plan(crm, db, args.job_id))
        out["seconds"] = round(time.perf_counter() - started, 3)
    out["vm_hwm_kib"] = _status_kib("VmHWM")
    out["vm_rss_kib"] = _status_kib("VmRSS")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
