"""Ops command line (the terminal twin of the plugin's web surface): run a CID in-process, read its status, coverage and errors, release a dead run's lock, roll a CID back, retry a job's failed records.

The feature flag is an ordinary Airflow Variable: `airflow variables set crm_notes_migration_enabled '[100, 5000]'`.

    python -m crm_notes_migration_ops.cli run --cid 100 --company-sso-id UUID [--batch-size 500] [--dry-run] ...
    python -m crm_notes_migration_ops.cli status --cid 100
    python -m crm_notes_migration_ops.cli coverage --cid 100 --company-sso-id UUID
    python -m crm_notes_migration_ops.cli errors --job-id JOB
    python -m crm_notes_migration_ops.cli release-lock --cid 100     # a lock left by a dead run
    python -m crm_notes_migration_ops.cli rollback --cid 100 [--execute]   # dry run unless --execute
    python -m crm_notes_migration_ops.cli retry --job-id JOB [--reason CONTACT_NOT_MAPPED ...]  # the failed-record queue

`run`'s options are the run contract's parameters (contract.py), the same as the DAG's params.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from notes_migration.domain import contract


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def run_in_process(conf: dict[str, Any]) -> str:
    """Run the DAG once with dag.test() (no scheduler needed) from Airflow's dags folder; returns its state."""
    from airflow.configuration import conf as airflow_conf
    from airflow.dag_processing.dagbag import DagBag

    from notes_migration.domain.config import DAG_ID

    dag = DagBag(dag_folder=airflow_conf.get("core", "dags_folder")).get_dag(DAG_ID)
    return str(dag.test(run_conf=conf).state)


def _airflow_runs(cid: int) -> list[dict[str, Any]] | None:
    """What Airflow's metadata DB knows of the CID's runs: the plugin's own lookup, so the CLI
    reports a dead run (RUN_FAILED) exactly as the status endpoint does."""
    from crm_notes_migration_ops.airflow_runs import runs_by_cid

    try:
        return runs_by_cid(cid).get(cid)
    except Exception as exc:  # no metadata DB reachable: the job records alone answer
        print(f"note: Airflow's runs not consulted ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None


def parser(spec: tuple[contract.RunParam, ...] = contract.RUN_PARAMS) -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="cmd", required=True)
    contract.add_cli_options(sub.add_parser("run", help="run crm_notes_migration for one CID in-process"), spec)
    sub.add_parser("status", help="the CID's status JSON (PRD §8)").add_argument("--cid", type=int, required=True)
    cov = sub.add_parser("coverage", help="Person→Contact coverage report (OQ-2)")
    cov.add_argument("--cid", type=int, required=True)
    cov.add_argument("--company-sso-id", required=True)
    cov.add_argument("--include-activities", action="store_true")
    sub.add_parser("errors", help="a job's reason-coded failures and skips").add_argument("--job-id", required=True)
    rl = sub.add_parser("release-lock", help="force-release a CID's lock left by a dead run")
    rl.add_argument("--cid", type=int, required=True)
    rb = sub.add_parser("rollback", help="remove the notes (and copied files) a CID's migrations inserted; dry run")
    rb.add_argument("--cid", type=int, required=True)
    rb.add_argument("--execute", action="store_true", help="really delete (default: dry run, nothing written)")
    rb.add_argument("--by", default=None, help="who asks (recorded; default: $USER)")
    rt = sub.add_parser("retry", help="retry a job's failed-record queue (all of it, or by reason) and re-validate")
    rt.add_argument("--job-id", required=True)
    rt.add_argument(
        "--reason",
        action="append",
        dest="reasons",
        metavar="REASON_CODE",
        help="retry only the notes that failed with this reason (repeatable; default: every reason)",
    )
    rt.add_argument("--by", default=None, help="who asks (recorded; default: $USER)")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "run":
        conf = {p.name: getattr(args, p.name) for p in contract.RUN_PARAMS}
        print(f"dag run finished: {run_in_process(conf)}", file=sys.stderr)
        return 0

    from notes_migration.domain.plain import as_plain
    from notes_migration.ops import queries as ops
    from notes_migration.stores import job_store
    from notes_migration.stores.connections import cdp_database, crm_connection

    db = cdp_database()
    if args.cmd == "status":
        with crm_connection() as crm:
            _print(ops.status_of(crm, db, args.cid, _airflow_runs(args.cid)))
    elif args.cmd == "coverage":
        from notes_migration.domain.config import Thresholds
        from notes_migration.run.coverage import coverage_report

        with crm_connection() as crm:
            _print(
                coverage_report(
                    crm,
                    db,
                    args.cid,
                    args.company_sso_id,
                    include_activities=args.include_activities,
                    gate=Thresholds().coverage_gate,
                )
            )
    elif args.cmd == "errors":
        _print(job_store.note_log(db, args.job_id))
    elif args.cmd == "release-lock":
        holder = job_store.get_lock(db, args.cid)
        released = job_store.release_lock(db, args.cid)
        _print({"cid": args.cid, "released": released, "holder": as_plain(holder)})
    elif args.cmd == "rollback":
        return _rollback(db, args)
    elif args.cmd == "retry":
        return _retry(db, args)
    return 0


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Airflow's logging (configured lazily, on stdout) goes to stderr meanwhile: stdout is the answer's JSON alone.
    At the file-descriptor level, so handlers created in between are covered too."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _retry(db: Any, args: argparse.Namespace) -> int:
    """The API route's retry (notes_migration.ops.retry.run_retry): exit 0 done, 3 refused (reason printed, nothing
    written)."""
    import getpass

    from notes_migration.domain.codes import Refused
    from notes_migration.ops import retry
    from notes_migration.stores.connections import crm_connection

    try:
        retry.check_retry(db, args.job_id, args.reasons)  # before any connection to the CRM or S3
        with _stdout_to_stderr(), crm_connection() as crm:
            record = retry.run_retry(crm, db, args.job_id, args.reasons, requested_by=args.by or getpass.getuser())
    except Refused as refused:
        _print({"refused": refused.reason.value, "detail": str(refused).split(": ", 1)[-1]})
        return 3
    _print(retry.outcome(db, args.job_id, record))
    return 0


def _rollback(db: Any, args: argparse.Namespace) -> int:
    """Exit 0 done (or planned), 3 refused (the report or reason is printed), nothing written on a refusal."""
    import getpass

    from notes_migration.domain.codes import Refused
    from notes_migration.domain.config import CDP_S3_CONN_ID
    from notes_migration.ops import rollback
    from notes_migration.stores import s3_store as s3
    from notes_migration.stores.connections import crm_connection

    by = args.by or getpass.getuser()
    target = s3.bucket_for(CDP_S3_CONN_ID) if args.execute else None
    with crm_connection() as crm:
        try:
            _print(rollback.rollback_cid(crm, db, args.cid, requested_by=by, dry_run=not args.execute, target=target))
        except rollback.RollbackRefused as refused:
            _print({"refused": refused.reason.value, "detail": str(refused), **refused.report})
            return 3
        except Refused as refused:
            _print({"refused": refused.reason.value, "detail": str(refused)})
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
