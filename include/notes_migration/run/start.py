"""Step 1 of a run: the preconditions, the CID's lock, the job record; and the run-level records every
later step writes through (halt, run error, release)."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from pymongo.database import Database

from notes_migration.domain.codes import (
    RUN_ERROR_OUTCOME,
    Event,
    Fenced,
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
from notes_migration.stores import cdp_api, crm_source, job_store, metrics
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


def check_writer(cfg: RunConfig) -> None:
    """On the HTTP path, the CDP notes API must accept the S2S token before the run writes anything:
    a 401/403 refuses the run (CDP_API_UNAUTHORIZED), nothing written. A dry run writes no note: not asked."""
    if not cdp_api.uses_http(cfg.thresholds) or cfg.dry_run:
        return
    try:
        cdp_api.check_access(cfg.thresholds, cfg.company_sso_id)
    except cdp_api.Unauthorized as refused:
        raise Refused(Reason.CDP_API_UNAUTHORIZED, f"{refused.detail}; check the cdp_notes_api connection") from None


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
    check_writer(cfg)
    job_id = job_id_for(run_id, cfg.cid)
    refuse_if_cancelled(job_store.get_job(db, job_id))
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


def refuse_if_cancelled(job: Mapping[str, Any] | None) -> None:
    """A run cancelled by Ops before it recorded its job (ops/cancel.cancel_before_start left a CANCELLED record
    under the job id its trigger returned) never starts: refused, nothing written."""
    if job and (job.get("halted") or {}).get("reason") == Reason.CANCELLED:
        by = job["halted"].get("cancelled_by")
        raise Refused(Reason.CANCELLED, f"job {job['_id']} was cancelled by {by} before it started")


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
    key = job_store.run_error_key(job["_id"], reason)
    entry = job_store.note_log_entry(
        job["_id"], job["cid"], key, None, RUN_ERROR_OUTCOME, reason, details, entry_id=key
    )
    job_store.replace_note_log(db, key, [entry], [RUN_ERROR_OUTCOME])


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


# --------------------------------------------------------------------------- fencing: one writer per CID

RunAlive = Callable[[], bool]  # the Airflow edge's answer to "is my DAG run still running?"

# Set by the Airflow edge around a task body (tasks/): steps ask it without carrying it through every call.
# Outside Airflow (tests, the CLI, benchmarks) it is None and only the lock is checked.
RUN_ALIVE: contextvars.ContextVar[RunAlive | None] = contextvars.ContextVar("run_alive", default=None)


# The lock holder a writer acts as when it is not the job's own run (a failed-record retry: `retry:<job>:<n>`).
FENCE_HOLDER: contextvars.ContextVar[str | None] = contextvars.ContextVar("fence_holder", default=None)


@contextlib.contextmanager
def fenced_as(holder: str) -> Iterator[None]:
    """Writes of the job done by another holder of the CID's lock (a retry) are fenced by that holder's id."""
    token = FENCE_HOLDER.set(holder)
    try:
        yield
    finally:
        FENCE_HOLDER.reset(token)


def check_fence(db: Database, job: Mapping[str, Any], still_running: RunAlive | None = None) -> None:
    """Immediately before a write: the run must still hold the CID's lock (its run id is the lock's token) and,
    inside Airflow, its DAG run must still be running. Raises Fenced (LOCK_LOST): nothing is written.

    Fencing rather than waiting: the lock may be released (cancel, the teardown of a run marked failed, Ops'
    release-lock) while a task of the run is still alive; from then on every write it attempts is refused here,
    so a later holder never shares the CID with a writer it cannot see. Only a write already past this check
    (one insert batch, one file) can still land, and it lands idempotently."""
    holder = FENCE_HOLDER.get() or job["run_id"]
    if not job_store.holds_lock(db, job["cid"], holder):
        raise Fenced(f"{holder} no longer holds the lock of CID {job['cid']}: nothing more is written")
    still_running = still_running or RUN_ALIVE.get()
    if still_running is not None and not still_running():
        raise Fenced(
            f"task of Airflow run {job['run_id']} is no longer running (run marked failed or deleted): nothing written",
            Reason.RUN_FAILED,
        )


def holds_cid(db: Database, job: Mapping[str, Any]) -> bool:
    """check_fence's lock half as an answer, for the records a writer keeps of work already done."""
    return job_store.holds_lock(db, job["cid"], FENCE_HOLDER.get() or job["run_id"])


def halt_fenced(db: Database, job_id: str, fenced: Fenced) -> None:
    """A writer stopped by its fence ends with a reason. Lock lost while its Airflow run lives on: its own job, if
    still in progress, is halted LOCK_LOST (the one record it still writes: its own, never CDP's or another
    holder's; a first halt wins). Its run stopped (RUN_FAILED): nothing is written, the status reads the run's
    end from Airflow (domain/status.with_airflow_runs)."""
    if fenced.reason != Reason.LOCK_LOST:
        return
    job = job_store.get_job(db, job_id)
    if job is not None and job.get("state") == State.IN_PROGRESS:
        halt_job(db, job, Reason.LOCK_LOST, details=str(fenced))
