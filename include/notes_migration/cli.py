"""Ops command line: run a CID in-process, read its status, coverage and errors, release a dead run's lock.

The feature flag is an ordinary Airflow Variable: `airflow variables set crm_notes_migration_enabled '[100, 5000]'`.

    python -m notes_migration.cli run --cid 100 [--company-sso-id UUID] [--batch-size 500] ...
    python -m notes_migration.cli status --cid 100
    python -m notes_migration.cli coverage --cid 100 --company-sso-id UUID
    python -m notes_migration.cli errors --job-id JOB
    python -m notes_migration.cli release-lock --cid 100     # a lock left by a dead run
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def run_in_process(conf: dict[str, Any]) -> str:
    """Run the DAG once with dag.test() (no scheduler needed); returns the run's state."""
    from airflow.configuration import conf as airflow_conf
    from airflow.dag_processing.dagbag import DagBag

    from notes_migration.config import DAG_ID

    dag = DagBag(dag_folder=airflow_conf.get("core", "dags_folder")).get_dag(DAG_ID)
    return str(dag.test(run_conf=conf).state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run crm_notes_migration for one CID in-process (dag.test)")
    run.add_argument("--cid", type=int, required=True)
    run.add_argument("--company-sso-id", help="default: the seeded company of the CID")
    run.add_argument("--batch-size", type=int, default=500)
    run.add_argument("--include-activities", action="store_true")
    run.add_argument("--dry-run", action="store_true")
    run.add_argument("--force-rerun", action="store_true")
    st = sub.add_parser("status", help="the CID's status JSON (PRD §8)")
    st.add_argument("--cid", type=int, required=True)
    cov = sub.add_parser("coverage", help="Person→Contact coverage report (OQ-2)")
    cov.add_argument("--cid", type=int, required=True)
    cov.add_argument("--company-sso-id", required=True)
    cov.add_argument("--include-activities", action="store_true")
    err = sub.add_parser("errors", help="a job's reason-coded failures and skips")
    err.add_argument("--job-id", required=True)
    rl = sub.add_parser("release-lock", help="force-release a CID's lock left by a dead run")
    rl.add_argument("--cid", type=int, required=True)
    args = parser.parse_args(argv)

    from notes_migration import cdp_store as store
    from notes_migration.connections import cdp_database, crm_connection

    if args.cmd == "run":
        from tests.support.seed import company_for

        conf = {
            "cid": args.cid,
            "company_sso_id": args.company_sso_id or company_for(args.cid),
            "batch_size": args.batch_size,
            "include_activities": args.include_activities,
            "dry_run": args.dry_run,
            "force_rerun": args.force_rerun,
        }
        state = run_in_process(conf)
        print(f"dag run finished: {state}", file=sys.stderr)
        return 0
    if args.cmd == "status":
        from notes_migration.status import cid_status

        _print(cid_status(cdp_database(), args.cid))
    elif args.cmd == "coverage":
        from notes_migration.config import Thresholds
        from notes_migration.migration import coverage_report

        with crm_connection() as crm:
            _print(
                coverage_report(
                    crm,
                    cdp_database(),
                    args.cid,
                    args.company_sso_id,
                    include_activities=args.include_activities,
                    gate=Thresholds().coverage_gate,
                )
            )
    elif args.cmd == "errors":
        _print(store.note_log(cdp_database(), args.job_id))
    elif args.cmd == "release-lock":
        holder = store.get_lock(cdp_database(), args.cid)
        released = store.release_lock(cdp_database(), args.cid)
        _print({"cid": args.cid, "released": released, "holder": store.as_plain(holder)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
