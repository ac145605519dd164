"""Cancelling a migration job (Ops API `POST /api/jobs/{job_id}/cancel`): the CDP side.

Coordination with running pages goes through the job record: the job is set
`halted` with reason CANCELLED *before* Airflow is told to stop the run, so a
page that has not started yet finds the halt (migrate_page checks the job state
before it reads or writes) and writes nothing; a page already inserting finishes
its batch (design: "after a halt nothing more is written except inserts already
under way"). Stopping the Airflow run is the API server's part
(crm_notes_migration_ops.airflow_runs.mark_failed); the lock is released here,
because a run marked failed never runs its release_lock teardown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.database import Database

from notes_migration.domain.accounting import sum_pages
from notes_migration.domain.codes import TERMINAL_STATES, Event, Reason, Refused, State
from notes_migration.domain.config import DAG_ID, RunConfig
from notes_migration.domain.contract import run_options
from notes_migration.domain.events import event
from notes_migration.domain.plain import as_plain, utc_now
from notes_migration.stores import job_store, metrics


def cancellable_job(db: Database, job_id: str) -> dict[str, Any]:
    """The job, if it can be cancelled; else Refused (JOB_NOT_FOUND, JOB_ALREADY_FINISHED). Writes nothing."""
    job = job_store.get_job(db, job_id)
    if job is None:
        raise Refused(Reason.JOB_NOT_FOUND, f"job {job_id} not found")
    if State(job["state"]) in TERMINAL_STATES:
        why = (job.get("halted") or {}).get("reason") if job["state"] == State.HALTED else None
        raise Refused(
            Reason.JOB_ALREADY_FINISHED,
            f"job {job_id} already ended {job['state']}" + (f" ({why})" if why else "") + ": nothing to cancel",
        )
    return job


def halt_cancelled(db: Database, job: dict[str, Any], *, cancelled_by: str) -> None:
    """Set the job halted with reason CANCELLED (later pages then write nothing) and record the halt event."""
    totals = sum_pages(job_store.page_results(db, job["_id"]))
    halted = {
        "reason": Reason.CANCELLED.value,
        "failure_rate": round(totals.failure_rate, 6),
        "at": utc_now(),
        "cancelled_by": cancelled_by,
    }
    job_store.update_job(db, job["_id"], state=State.HALTED.value, halted=halted)
    job_store.record_events(
        db,
        [
            event(
                Event.HALTED,
                job_id=job["_id"],
                cid=job["cid"],
                reason=Reason.CANCELLED.value,
                failure_rate=halted["failure_rate"],
                cancelled_by=cancelled_by,
            )
        ],
    )
    metrics.run_halted(job["cid"], Reason.CANCELLED.value)


def release_job_lock(db: Database, job: dict[str, Any]) -> dict[str, Any] | None:
    """Release the CID's lock if this job's run holds it; returns the lock released (None: not held)."""
    lock = job_store.get_lock(db, job["cid"])
    if lock and lock.get("run_id") == job.get("run_id") and job_store.release_lock(db, job["cid"], job["run_id"]):
        return as_plain(lock)
    return None


def cancel_before_start(
    db: Database, *, job_id: str, run_id: str, conf: Mapping[str, Any], cancelled_by: str
) -> dict[str, Any] | None:
    """Cancel a run by the job id its trigger returned, before the run has recorded that job: a job record
    `halted`/CANCELLED is written under that id, so the run's preconditions refuse it (run/start.py) and it
    writes nothing. Returns the record, or None when the run recorded its job first (cancel that job instead).
    The caller marks the Airflow run failed as for any cancel."""
    cfg = RunConfig.from_dict(run_options(conf) | {"thresholds": {}})
    stamp = utc_now()
    record = {
        "_id": job_id,
        "cid": cfg.cid,
        "company_sso_id": cfg.company_sso_id,
        "dag_id": DAG_ID,
        "run_id": run_id,
        "triggered_by": "unknown",
        "config": cfg.as_dict(),
        "state": State.HALTED.value,
        "halted": {"reason": Reason.CANCELLED.value, "failure_rate": 0.0, "at": stamp, "cancelled_by": cancelled_by},
        "cancelled_before_start": True,
        "created_at": stamp,
        "updated_at": stamp,
    }
    try:
        job_store.insert_new_job(db, record)
    except job_store.DuplicateKeyError:
        return None
    job_store.record_events(
        db,
        [event(Event.HALTED, job_id=job_id, cid=cfg.cid, reason=Reason.CANCELLED.value, cancelled_by=cancelled_by)],
    )
    return as_plain(record)
