"""Step 1 of a run: the preconditions, the CID's lock, the job record; and the run-level records every
later step writes through (halt, run error, release)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pymongo.database import Database

from notes_migration.domain.codes import (
    RUN_ERROR_OUTCOME,
    Event,
    Reason,
    Refused,
    State,
)
from notes_migration.domain.config import (
    DAG_ID,
    UUID_RE,
    RunConfig,
    job_id_for,
)
from notes_migration.domain.events import event
from notes_migration.domain.plain import utc_now
from notes_migration.stores import crm_source, job_store, metrics
from notes_migration.stores.crm_source import CrmExtractFailed
from notes_migration.stores.job_store import purge_note_log_if_overdue

log = logging.getLogger(__name__)


def check_preconditions(crm, db: Database, cfg: RunConfig, *, flag_cids: Iterable[int]) -> None:
    """Every reason to refuse that needs no lock; raises Refused, writes nothing."""
    if cfg.cid not in set(flag_cids):
        raise Refused(Reason.FLAG_DISABLED, f"feature flag is OFF for CID {cfg.cid}")
    # fullmatch: the contract's pattern ends in `$`, which also matches before a trailing newline (Python's re and the
    # JSON-schema check of the DAG's params both let "<uuid>\n" through; the API's pydantic check does not)
    if not UUID_RE.fullmatch(cfg.company_sso_id or ""):
        raise Refused(Reason.INVALID_COMPANY_SSO_ID, f"company_sso_id {cfg.company_sso_id!r} is not a UUID")
    if not crm_source.cid_exists(crm, cfg.cid):
        raise Refused(Reason.CID_NOT_FOUND, f"CID {cfg.cid} is not an organization of the CRM")
    last = job_store.latest_job(db, cfg.cid)
    done = last and last.get("state") == State.COMPLETED_SUCCESS and not last.get("rolled_back")  # rollback.py
    if last is not None and done and not (cfg.force_rerun or cfg.dry_run):
        raise Refused(
            Reason.ALREADY_MIGRATED,
            f"CID {cfg.cid} already completed_success in job {last['_id']}; use force_rerun to run it again",
        )


def load_job(db: Database, job_id: str) -> tuple[dict, RunConfig]:
    job = job_store.get_job(db, job_id)
    if job is None:
        raise LookupError(f"job {job_id} not found")
    return job, RunConfig.from_dict(job["config"])


def lock_cid(db: Database, cfg: RunConfig, *, job_id: str, run_id: str) -> None:
    """The CID's lock for this run (or retry), or a refusal: JOB_ALREADY_RUNNING, nothing written."""
    try:
        job_store.acquire_lock(
            db, cfg.cid, job_id=job_id, run_id=run_id, lease_seconds=cfg.thresholds.lock_lease_seconds
        )
    except job_store.LockHeld as held:
        raise Refused(Reason.JOB_ALREADY_RUNNING, str(held)) from None


def start_job(
    crm, db: Database, cfg: RunConfig, *, run_id: str, triggered_by: str | None, flag_cids: Iterable[int]
) -> dict:
    """Preconditions, the per-CID lock, the job record and the started event."""
    check_preconditions(crm, db, cfg, flag_cids=flag_cids)
    job_id = job_id_for(run_id, cfg.cid)
    lock_cid(db, cfg, job_id=job_id, run_id=run_id)
    try:
        index_form = job_store.ensure_indexes(db)
        purged = purge_note_log_if_overdue(db, cfg.thresholds.failed_record_retention_days)
        stamp = utc_now()
        existing = job_store.get_job(db, job_id)
        job_store.create_job(
            db,
            {
                "_id": job_id,
                "cid": cfg.cid,
                "company_sso_id": cfg.company_sso_id,
                "dag_id": DAG_ID,
                "run_id": run_id,
                "triggered_by": triggered_by or "unknown",
                "config": cfg.as_dict(),
                "state": State.IN_PROGRESS.value,
                "created_at": existing["created_at"] if existing else stamp,
                "updated_at": stamp,
                "index_form": index_form,
            },
        )
        job_store.record_events(
            db,
            [
                event(
                    Event.STARTED,
                    job_id=job_id,
                    cid=cfg.cid,
                    company_sso_id=cfg.company_sso_id,
                    triggered_by=triggered_by or "unknown",
                    config=cfg.as_dict(),
                    purged_note_log=purged,
                )
            ],
        )
        metrics.run_started(cfg.cid)
    except Exception:
        job_store.release_lock(db, cfg.cid, run_id)
        raise
    recorded = job_store.get_job(db, job_id)
    assert recorded is not None, f"job {job_id} was just recorded"
    return descriptor(recorded)


def descriptor(job: dict) -> dict:
    """The small job descriptor tasks pass to each other (never note bodies)."""
    return {"job_id": job["_id"], "cid": job["cid"], "company_sso_id": job["company_sso_id"], "run_id": job["run_id"]}


def job_of_run(db: Database, run_id: str, cid: int) -> dict | None:
    """The descriptor of the job a DAG run recorded, or None when its preconditions refused it."""
    job = job_store.get_job(db, job_id_for(run_id, cid))
    return descriptor(job) if job else None


def halt_job(db: Database, job: dict, reason: Reason, failure_rate: float | None = None, **details: Any) -> None:
    halted = {"reason": reason.value, "failure_rate": failure_rate, "at": utc_now(), **details}
    job_store.update_job(db, job["_id"], state=State.HALTED.value, halted=halted)
    job_store.record_events(
        db, [event(Event.HALTED, job_id=job["_id"], cid=job["cid"], reason=reason.value, failure_rate=failure_rate)]
    )
    metrics.run_halted(job["cid"], reason.value)


def record_run_error(db: Database, job: dict, reason: Reason, details: str) -> None:
    """A run-level entry of the job's error log (no note id): the CSV and the status show why."""
    entry = {
        "_id": f"{job['_id']}:run:{reason.value}",
        "job_id": job["_id"],
        "job_page": f"{job['_id']}:run:{reason.value}",
        "cid": job["cid"],
        "legacy_crm_note_id": None,
        "outcome": RUN_ERROR_OUTCOME,
        "reason_code": reason.value,
        "details": details,
        "created_at": utc_now(),
    }
    job_store.replace_note_log(db, entry["job_page"], [entry], [RUN_ERROR_OUTCOME])


def halt_on_crm_failure(db: Database, job_id: str, failure: CrmExtractFailed, step: str) -> None:
    """PRD §9 #2: the CRM kept failing after its retries; the run halts with CRM_EXTRACT_FAILED
    (status, error log, halted event; the alert plan pages P1 for a halted run). A first halt wins."""
    job, _ = load_job(db, job_id)
    if job.get("state") == State.HALTED:
        return
    details = f"{step}: {failure}"
    record_run_error(db, job, Reason.CRM_EXTRACT_FAILED, details)
    halt_job(db, job, Reason.CRM_EXTRACT_FAILED, step=step, details=details)


def release(db: Database, cid: int, run_id: str) -> bool:
    released = job_store.release_lock(db, cid, run_id)
    log.info("lock of CID %s %s", cid, "released" if released else "was not held by this run")
    return released
