"""The Ops surface's logic (status, fleet, per-CID detail, error log, trigger checks), behind the plugin API.

Everything here is plain Python over the CRM connection, the CDP database and
plain values; the FastAPI layer (api.py) only parses requests, authenticates
and maps results and refusals to HTTP.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo.database import Database

from notes_migration import cdp_store as store
from notes_migration import crm_source
from notes_migration.codes import AttachmentOutcome, Event, Outcome, Reason, State
from notes_migration.config import RunConfig
from notes_migration.migration import Refused, check_preconditions
from notes_migration.status import build_status

# HTTP status of each refusal of the trigger endpoint (the DAG's first task refuses the same way).
REFUSAL_HTTP_STATUS: dict[Reason, int] = {
    Reason.FLAG_DISABLED: 403,
    Reason.CID_NOT_FOUND: 404,
    Reason.ALREADY_MIGRATED: 409,
    Reason.JOB_ALREADY_RUNNING: 409,
    Reason.INVALID_COMPANY_SSO_ID: 422,
}

RUN_EVENTS = (Event.STARTED, Event.BATCH_COMPLETED, Event.HALTED, Event.COMPLETED)
NOTE_EVENTS = (Event.NOTE_FAILED, Event.OWNER_NOT_RESOLVED, Event.ATTACHMENT_FAILED)

# The error log: what went wrong (note failures and attachment failures); `all` adds the skips.
ERROR_OUTCOMES = (Outcome.FAILED.value, AttachmentOutcome.FAILED.value)
OUTCOME_FILTERS: dict[str, tuple[str, ...] | None] = {
    "errors": ERROR_OUTCOMES,
    "failed": (Outcome.FAILED.value,),
    "skipped": (Outcome.SKIPPED.value,),
    "attachment_failed": (AttachmentOutcome.FAILED.value,),
    "attachment_skipped": (AttachmentOutcome.SKIPPED.value,),
    "all": None,
}
ERROR_LOG_FIELDS = ("legacy_crm_note_id", "reason_code", "details", "outcome", "created_at")


# --------------------------------------------------------------------------- status


class UnknownCid(LookupError):
    """The CID is not an organization of the CRM."""


def status_of(crm, db: Database, cid: int) -> dict[str, Any]:
    """The PRD §8 status of a CID's latest real run; a CID the CRM does not know is an error, not not_started."""
    if not crm_source.cid_exists(crm, cid):
        raise UnknownCid(cid)
    job = store.latest_job(db, cid)
    if job is None:
        return build_status(cid, None, [], {})
    out = build_status(cid, job, store.page_results(db, job["_id"]), store.counts_by_outcome(db, job["_id"]))
    out["run_id"] = job.get("run_id")
    return out


# --------------------------------------------------------------------------- fleet


def attachment_success_pct(attachments: Mapping[str, Any] | None) -> float | None:
    """The relink success share in percent (`success_rate` is a 0–1 share of the files tried)."""
    if not attachments:
        return None
    rate = attachments.get("success_rate")
    if isinstance(rate, int | float):
        return round(100.0 * rate, 1)
    total, relinked = attachments.get("total"), attachments.get("relinked")
    if isinstance(total, int) and isinstance(relinked, int) and total:
        return round(100.0 * relinked / total, 1)
    return None


def fleet_row(job: Mapping[str, Any], totals: Mapping[str, int]) -> dict[str, Any]:
    """One line of the fleet table, from a job and its summed page counters (pure)."""
    st = build_status(job["cid"], job, [totals] if totals else [], {})
    notes_total = int(job.get("notes_total") or 0)
    attempted = int(totals.get("attempted", 0))
    migrated = int(totals.get("migrated", 0)) + int(totals.get("already_migrated", 0))
    failed = int(totals.get("failed", 0))
    validation = st.get("validation") or {}
    failure_rate = st.get("failure_rate", round(failed / attempted, 6) if attempted else 0.0)
    return {
        "cid": job["cid"],
        "status": st["status"],
        "job_id": job["_id"],
        "run_id": job.get("run_id"),
        "company_sso_id": job.get("company_sso_id"),
        "progress_pct": 100.0
        if st["status"] in (State.COMPLETED_SUCCESS, State.COMPLETED_WITH_ERRORS)
        else (min(100.0, round(100.0 * attempted / notes_total, 1)) if notes_total else 0.0),
        "notes_migrated": migrated if validation.get("found") is None else validation["found"],
        "notes_total": notes_total,
        "notes_failed": failed,
        "failure_rate": failure_rate,
        "match_pct": validation.get("match_pct"),
        "attachment_success_pct": attachment_success_pct(job.get("attachments")),
        "halted_reason": st.get("halted_reason"),
        "pages_done": int(totals.get("pages_done", 0)),
        "pages_total": job.get("pages_total"),
        "updated_at": st.get("updated_at"),
        "created_at": st.get("created_at"),
        "triggered_by": job.get("triggered_by"),
    }


def fleet(db: Database) -> list[dict[str, Any]]:
    """Every CID that has a (real) job: its latest job as a fleet row, by CID. Two queries in all."""
    jobs = store.jobs_overview(db)
    totals = store.page_totals(db, [j["_id"] for j in jobs])
    return [fleet_row(job, totals.get(job["_id"], {})) for job in jobs]


def state_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = {s.value: 0 for s in State}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


# --------------------------------------------------------------------------- per-CID detail


def cid_detail(crm, db: Database, cid: int) -> dict[str, Any]:
    """Status, event timeline, failures by reason and the effective config of the CID's latest job."""
    status = status_of(crm, db, cid)
    detail: dict[str, Any] = {
        "cid": cid,
        "status": status,
        "timeline": [],
        "event_counts": {},
        "failures_by_reason": [],
        "skips_by_reason": [],
        "config": None,
        "coverage": None,
    }
    job_id = status.get("job_id")
    if not job_id:
        return detail
    job = store.get_job(db, job_id) or {}
    detail["timeline"] = [store.as_plain(e) for e in store.run_events(db, job_id, [e.value for e in RUN_EVENTS])]
    detail["event_counts"] = store.event_counts(db, job_id)
    by_outcome = store.counts_by_outcome(db, job_id)
    detail["failures_by_reason"] = _by_reason(by_outcome, ERROR_OUTCOMES)
    detail["skips_by_reason"] = _by_reason(by_outcome, (Outcome.SKIPPED.value, AttachmentOutcome.SKIPPED.value))
    detail["config"] = job.get("config")
    detail["coverage"] = job.get("coverage")
    detail["halted"] = store.as_plain(job.get("halted"))
    detail["validation"] = job.get("validation")
    return detail


def _by_reason(by_outcome: Mapping[str, Mapping[str, int]], outcomes: Iterable[str]) -> list[dict[str, Any]]:
    rows = [
        {"outcome": o, "reason_code": r, "count": n} for o in outcomes for r, n in (by_outcome.get(o) or {}).items()
    ]
    return sorted(rows, key=lambda r: (-r["count"], r["reason_code"]))


# --------------------------------------------------------------------------- error log


def error_log(db: Database, job_id: str, outcome: str = "errors", limit: int = 0) -> list[dict[str, Any]] | None:
    """The job's reason-coded log entries (None when the job does not exist)."""
    if store.get_job(db, job_id) is None:
        return None
    outcomes = OUTCOME_FILTERS[outcome]
    entries = store.note_log(db, job_id, outcomes, limit=limit)
    return [{k: v for k, v in (store.as_plain(e) or {}).items() if k in ERROR_LOG_FIELDS} for e in entries]


def _csv_cell(value: Any) -> Any:
    """Neutralise spreadsheet formulas: details can echo customer text (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def error_log_csv(entries: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(ERROR_LOG_FIELDS)
    for entry in entries:
        writer.writerow([_csv_cell(entry.get(k)) for k in ERROR_LOG_FIELDS])
    return buf.getvalue()


# --------------------------------------------------------------------------- trigger


def lock_is_live(lock: Mapping[str, Any] | None, lease_seconds: int, now: dt.datetime | None = None) -> bool:
    """A lock refreshed within its lease belongs to a live run (a stale one is taken over by the next run)."""
    if not lock:
        return False
    beat = lock.get("heartbeat_at") or lock.get("acquired_at")
    if beat is None:
        return True
    if beat.tzinfo is None:
        beat = beat.replace(tzinfo=dt.UTC)
    return ((now or store.now()) - beat).total_seconds() <= lease_seconds


def check_trigger(
    crm, db: Database, cfg: RunConfig, *, flag_cids: Iterable[int], active_run_ids: Iterable[str] = ()
) -> None:
    """Every refusal the DAG's first task would give, checked before a run exists; raises Refused, writes nothing.

    Adds what only the API can see: a run of this CID that is queued or running
    in Airflow but has not taken the CID's lock yet."""
    check_preconditions(crm, db, cfg, flag_cids=flag_cids)
    lock = store.get_lock(db, cfg.cid)
    if lock_is_live(lock, cfg.thresholds.lock_lease_seconds):
        raise Refused(
            Reason.JOB_ALREADY_RUNNING,
            f"CID {cfg.cid} is locked by job {lock.get('job_id')} (run {lock.get('run_id')})",
        )
    active = sorted(active_run_ids)
    if active:
        raise Refused(Reason.JOB_ALREADY_RUNNING, f"CID {cfg.cid} already has a queued or running DAG run: {active[0]}")
