"""Ops command line (the terminal twin of the plugin's web surface): run a CID in-process, read its status, coverage and errors, release a dead run's lock, roll a CID back, retry a job's failed records.

The feature flag is an ordinary Airflow Variable: `airflow variables set crm_notes_migration_enabled '[100, 5000]'`.

    python -m crm_notes_migration_ops.cli run --cid 100 --company-sso-id UUID [--batch-size 500] [--dry-run] ...
    python -m crm_notes_migration_ops.cli status --cid 100 [--dry-run]
    python -m crm_notes_migration_ops.cli coverage --cid 100 --company-sso-id UUID
    python -m crm_notes_migration_ops.cli errors --job-id JOB [--outcome errors|all|...] [--limit N]
    python -m crm_notes_migration_ops.cli release-lock --cid 100     # a lock left by a dead run
    python -m crm_notes_migration_ops.cli rollback --cid 100 [--execute]   # dry run unless --execute
    python -m crm_notes_migration_ops.cli retry --job-id JOB [--reason CONTACT_NOT_MAPPED ...]  # the failed-record queue
    python -m crm_notes_migration_ops.cli sign-off --cid 100 [--seed S]                 # the sign-off sample
    python -m crm_notes_migration_ops.cli sign-off --cid 100 --seed S --verdict "..."   # record a sign-off

Every command writes its answer as JSON alone on stdout (logging, Airflow's included, goes to stderr) and calls
the same functions of notes_migration.ops.queries as the API, so both answer alike. A refusal exits 3 and prints
`{"refused": REASON_CODE, "reason_code", "message", "detail", …}` (the API's refusal body); nothing was written.
`run`'s options are the run contract's parameters (contract.py), the same as the DAG's params.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from notes_migration.domain import contract
from notes_migration.domain.codes import OUTCOME_FILTERS, Halted, Refused

EXIT_REFUSED = 3


def _json_default(value: Any) -> Any:
    """As the API's encoder: dates in ISO 8601, anything else (ObjectId …) as its string."""
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else str(value)


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
        logging.getLogger(__name__).warning("Airflow's runs not consulted (%s: %s)", type(exc).__name__, exc)
        return None


def parser(spec: tuple[contract.RunParam, ...] = contract.RUN_PARAMS) -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="cmd", required=True)
    contract.add_cli_options(sub.add_parser("run", help="run crm_notes_migration for one CID in-process"), spec)
    st = sub.add_parser("status", help="the CID's status JSON (PRD §8)")
    st.add_argument("--cid", type=int, required=True)
    st.add_argument("--dry-run", action="store_true", help="the CID's latest dry-run report instead")
    cov = sub.add_parser("coverage", help="Person→Contact coverage report (OQ-2), gated as the settings say")
    cov.add_argument("--cid", type=int, required=True)
    cov.add_argument("--company-sso-id", required=True)
    cov.add_argument("--include-activities", action="store_true")
    err = sub.add_parser("errors", help="a job's reason-coded error log (the API's JSON error log)")
    err.add_argument("--job-id", required=True)
    err.add_argument("--outcome", choices=sorted(OUTCOME_FILTERS), default="errors", help="default: errors")
    err.add_argument("--limit", type=int, default=0, help="at most this many rows (default 0: all)")
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
    so = sub.add_parser("sign-off", help="the CID's sign-off sample, or with --verdict record a sign-off of it")
    so.add_argument("--cid", type=int, required=True)
    so.add_argument("--seed", type=int, default=None, help="the sample's seed (default: a new one, printed)")
    so.add_argument("--random-draw", type=int, default=None, help="notes drawn at random beside the chosen ones")
    so.add_argument("--verdict", default=None, help="record a sign-off with this free-text verdict (needs --seed)")
    so.add_argument("--by", default=None, help="who signs off (recorded; default: $USER)")
    return root


# --------------------------------------------------------------------------- the commands: args → JSON answer


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from notes_migration.domain.config import DAG_ID

    conf = {p.name: getattr(args, p.name) for p in contract.RUN_PARAMS}
    return {"dag_id": DAG_ID, "cid": args.cid, "state": run_in_process(conf)}


def _status(args: argparse.Namespace) -> dict[str, Any]:
    from notes_migration.ops import queries as ops
    from notes_migration.stores.connections import cdp_database, crm_connection

    runs = None if args.dry_run else _airflow_runs(args.cid)
    with crm_connection() as crm:
        return ops.status_answer(crm, cdp_database(), args.cid, runs, dry_run=args.dry_run)


def _coverage(args: argparse.Namespace) -> dict[str, Any]:
    from notes_migration.ops import queries as ops
    from notes_migration.stores.connections import cdp_database, crm_connection

    with crm_connection() as crm:
        return ops.coverage_answer(
            crm, cdp_database(), args.cid, args.company_sso_id, include_activities=args.include_activities
        )


def _errors(args: argparse.Namespace) -> dict[str, Any]:
    from notes_migration.ops import queries as ops
    from notes_migration.stores.connections import cdp_database, crm_connection

    with crm_connection() as crm:  # a coverage halt lists its unmapped persons, as on the API
        return ops.error_log_answer(cdp_database(), args.job_id, args.outcome, args.limit, crm=crm)


def _release_lock(args: argparse.Namespace) -> dict[str, Any]:
    from notes_migration.domain.plain import as_plain
    from notes_migration.stores import job_store
    from notes_migration.stores.connections import cdp_database

    db = cdp_database()
    holder = job_store.get_lock(db, args.cid)
    released = job_store.release_lock(db, args.cid)
    return {"cid": args.cid, "released": released, "holder": as_plain(holder)}


def _rollback(args: argparse.Namespace) -> dict[str, Any]:
    from notes_migration.ops import queries as ops
    from notes_migration.stores.connections import cdp_database, crm_connection

    by = args.by or getpass.getuser()
    with crm_connection() as crm:
        return ops.rollback_answer(crm, cdp_database(), args.cid, requested_by=by, execute=args.execute)


def _retry(args: argparse.Namespace) -> dict[str, Any]:
    from notes_migration.ops import queries as ops
    from notes_migration.stores.connections import cdp_database

    by = args.by or getpass.getuser()
    return ops.retry_answer(cdp_database(), args.job_id, args.reasons, requested_by=by)


def _sign_off(args: argparse.Namespace) -> dict[str, Any]:
    from notes_migration.domain import signoff as rules
    from notes_migration.ops import signoff
    from notes_migration.stores.connections import cdp_database, crm_connection

    draw = rules.RANDOM_DRAW if args.random_draw is None else args.random_draw
    with crm_connection() as crm:
        view = signoff.sample(crm, cdp_database(), args.cid, seed=args.seed, random_draw=draw)
    if args.verdict is None:
        return view
    if args.seed is None:
        raise SystemExit("sign-off --verdict needs the --seed of the sample you looked at")
    by = args.by or getpass.getuser()
    return signoff.record(
        cdp_database(), args.cid, by=by, seed=args.seed, verdict=args.verdict, sample_size=len(view["notes"])
    )


COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "run": _run,
    "status": _status,
    "coverage": _coverage,
    "errors": _errors,
    "release-lock": _release_lock,
    "rollback": _rollback,
    "retry": _retry,
    "sign-off": _sign_off,
}


# --------------------------------------------------------------------------- stdout: the JSON answer alone


def _log_to_stderr() -> None:
    """The CLI's own logging goes to stderr (Airflow's, configured lazily on stdout, is caught by _answer_only)."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")


@contextlib.contextmanager
def _answer_only() -> Iterator[TextIO]:
    """While the command runs, file descriptor 1 is stderr: whatever prints or logs to stdout (Airflow configures
    its logging lazily, on stdout) lands on stderr. The answer goes to the real stdout, through the stream yielded."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    answer = os.fdopen(os.dup(saved), "w")
    try:
        yield answer
    finally:
        sys.stdout.flush()
        answer.close()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _log_to_stderr()
    with _answer_only() as out:
        try:
            answer, code = COMMANDS[args.cmd](args), 0
        except (Refused, Halted) as refused:  # nothing written: the reason code, as the API answers it
            from notes_migration.ops.queries import refusal_body

            body = refusal_body(refused)
            answer, code = {"refused": body["reason_code"], **body}, EXIT_REFUSED
        out.write(json.dumps(answer, indent=2, sort_keys=False, default=_json_default) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
