"""Daily housekeeping of the migration's bookkeeping (PRD §7.1 retention), for the DAG `crm_notes_housekeeping`.

* the failed-record queue (`crm_migration_note_log`) is purged after
  `Thresholds.failed_record_retention_days` (30);
* job records and what hangs off them (pages, attachment pages, person maps,
  events) after `Thresholds.job_retention_days` (365) since the job's last
  update, except the latest real job of each CID: it decides the CID's status
  and the ALREADY_MIGRATED refusal, so purging it would make a finished CID
  look never started;
* the audit map (`crm_migration_audit`) is never touched: it is the only record
  of which CDP note came from which CRM note;
* locks of runs Airflow knows are over (DAG run `failed` or `success`) are
  released; when Airflow cannot answer for a run (unknown run id, API error,
  called outside Airflow) the lock's lease decides (`job_store.lock_is_live`).

Plain deletes by timestamp, so it works on servers without TTL indexes (FerretDB v1).
Idempotent: a second call the same day removes nothing more.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from typing import Any

from pymongo.database import Database

from notes_migration.domain import config as C
from notes_migration.domain.config import DAG_ID, Thresholds
from notes_migration.domain.plain import as_plain, utc_now
from notes_migration.stores import job_store
from notes_migration.stores.job_store import purge_note_log

log = logging.getLogger(__name__)

DEAD_RUN_STATES = frozenset({"failed", "success"})
_CHUNK = 500

# A collection keyed by job id, and the field that dates its documents (None: undated).
JOB_CHILDREN: dict[str, str | None] = {
    C.PAGES: "finished_at",
    C.ATTACHMENT_PAGES: "finished_at",
    C.PERSON_MAPS: None,
    C.EVENTS: "at",
}

RunState = Callable[[str], str | None]  # run_id → the DAG run's state in Airflow (raises when unknown)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _delete_by_job(db: Database, collection: str, job_ids: list[str]) -> int:
    return sum(db[collection].delete_many({"job_id": {"$in": part}}).deleted_count for part in _chunks(job_ids))


def expired_job_ids(db: Database, cutoff: dt.datetime) -> list[str]:
    """Jobs last updated before the cutoff, minus the latest real job of each CID."""
    old = list(
        db[C.JOBS].find(
            {
                "$or": [
                    {"updated_at": {"$lt": cutoff}},
                    {"updated_at": {"$exists": False}, "created_at": {"$lt": cutoff}},
                ]
            },
            {"_id": 1, "cid": 1},
        )
    )
    keep = set()
    for cid in sorted({j["cid"] for j in old}):
        latest = job_store.latest_job(db, cid)
        if latest is not None:
            keep.add(latest["_id"])
    return sorted(j["_id"] for j in old if j["_id"] not in keep)


def _orphan_job_ids(db: Database, collection: str, stamp: str | None, cutoff: dt.datetime) -> list[str]:
    """Job ids of a child collection whose job record no longer exists (dated ones only once past the cutoff)."""
    query: dict[str, Any] = {stamp: {"$lt": cutoff}} if stamp else {}
    ids = [i for i in db[collection].distinct("job_id", query) if isinstance(i, str)]
    existing: set[str] = set()
    for part in _chunks(ids):
        existing.update(j["_id"] for j in db[C.JOBS].find({"_id": {"$in": part}}, {"_id": 1}))
    return sorted(set(ids) - existing)


def purge_expired(db: Database, thresholds: Thresholds, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Delete what is past its retention; returns the counts removed per collection (audit map: never)."""
    at = now or utc_now()
    note_cutoff = at - dt.timedelta(days=thresholds.failed_record_retention_days)
    job_cutoff = at - dt.timedelta(days=thresholds.job_retention_days)
    removed: dict[str, int] = {}
    removed[C.NOTE_LOG] = purge_note_log(db, thresholds.failed_record_retention_days, now=at)
    expired = expired_job_ids(db, job_cutoff)
    for collection, stamp in JOB_CHILDREN.items():
        orphans = _orphan_job_ids(db, collection, stamp, job_cutoff)
        removed[collection] = _delete_by_job(db, collection, sorted(set(expired) | set(orphans)))
    removed[C.JOBS] = sum(db[C.JOBS].delete_many({"_id": {"$in": part}}).deleted_count for part in _chunks(expired))
    report = {
        "removed": removed,
        "expired_job_ids": expired,
        "note_log_cutoff": as_plain({"v": note_cutoff})["v"],  # type: ignore[index]
        "job_cutoff": as_plain({"v": job_cutoff})["v"],  # type: ignore[index]
        "kept": [C.AUDIT],
    }
    log.info("housekeeping purge: removed %s (jobs %s); %s kept", removed, expired[:20], C.AUDIT)
    return report


def release_dead_locks(
    db: Database, *, lease_seconds: int, run_state: RunState | None = None, now: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Release each lock whose run is over: Airflow's word when it has one, else the lease.

    The delete matches the lock as read (run id and heartbeat), so a lock taken over
    or refreshed in between is left alone."""
    released = []
    for lock in list(db[C.LOCKS].find()):
        run_id = lock.get("run_id")
        state: str | None = None
        if run_state is not None and run_id:
            try:
                answer = run_state(run_id)
                state = None if answer is None else str(getattr(answer, "value", answer))  # DagRunState or str
            except Exception as exc:  # unknown run (e.g. a dag.test() run elsewhere), API down: the lease decides
                log.warning(
                    "Airflow has no state for run %s of CID %s (%s): deciding by lease", run_id, lock["_id"], exc
                )
        if state is not None:
            basis, dead = "airflow", state in DEAD_RUN_STATES
        else:
            basis, dead = "lease", not job_store.lock_is_live(lock, lease_seconds, at=now)
        if not dead:
            continue
        match = {"_id": lock["_id"], "run_id": run_id, "heartbeat_at": lock.get("heartbeat_at")}
        if db[C.LOCKS].delete_one(match).deleted_count:
            entry = {
                "cid": lock["_id"],
                "job_id": lock.get("job_id"),
                "run_id": run_id,
                "basis": basis,
                "run_state": state,
                "heartbeat_at": as_plain({"v": lock.get("heartbeat_at")})["v"],  # type: ignore[index]
            }
            log.info("released lock of CID %s: %s", lock["_id"], entry)
            released.append(entry)
    return released


# --------------------------------------------------------------------------- the Airflow edge (task bodies)


def _airflow_run_state() -> RunState:
    """The DAG run state through the Task SDK (the task's supervisor asks the Execution API; no metadata DB)."""
    from airflow.sdk import get_current_context

    ti = get_current_context()["ti"]
    return lambda run_id: ti.get_dagrun_state(dag_id=DAG_ID, run_id=run_id)


def purge_task() -> dict[str, Any]:
    from notes_migration.stores import settings
    from notes_migration.stores.connections import cdp_database

    return purge_expired(cdp_database(), settings.thresholds())


def release_locks_task() -> dict[str, Any]:
    from notes_migration.stores import settings
    from notes_migration.stores.connections import cdp_database

    released = release_dead_locks(
        cdp_database(), lease_seconds=settings.thresholds().lock_lease_seconds, run_state=_airflow_run_state()
    )
    return {"locks_released": released}
