"""Failed-record retry (OQ-3): retry a job's failed-record queue, all of it or by reason code, without
re-reading the rest of the CID (Ops API `POST /api/jobs/{job_id}/retry`).

Typical case: notes failed CONTACT_NOT_MAPPED, CDP backfilled the missing contacts, Ops retry that
reason. The retry reads only the queued note ids from the CRM (crm_source.read_notes), resolves their
persons afresh (the run's saved person map predates the backfill), decides and inserts them like a
page, then rewrites the job's bookkeeping so that every note still has exactly one outcome: a
recovered note leaves the queue, is audited under the job and counted migrated on its page; a note
that fails again keeps one entry (its new reason). It relinks the attachments of the pages it touched
(idempotent: files already copied are reused) and recomputes the verdict with validate.validate.

Runs inside the API request, under the CID's lock like a run (a second retry or a run of the CID is
refused while it holds it): queues are small by construction (a run halts above 1% failures and the
coverage gate admits at most 1% unmapped notes), so a retry is one page's worth of work plus the
validation; a DAG run would need a new run parameter (`retry_of`) in the run contract for no gain at
that size. Above RETRY_MAX_NOTES it refuses and points to force_rerun.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from notes_migration.domain.accounting import tally
from notes_migration.domain.codes import Outcome, Reason, Refused, State
from notes_migration.domain.config import NOTE_LOG, PAGES, RunConfig
from notes_migration.domain.plain import as_plain, utc_now
from notes_migration.domain.resolve import resolve_contacts
from notes_migration.domain.transform import Decision
from notes_migration.run import batch, start, validate
from notes_migration.stores import cdp_api, cdp_store, crm_source, job_store

log = logging.getLogger(__name__)

RETRY_MAX_NOTES = 10_000  # one request's worth; above this, re-run the CID with force_rerun
NOTE_FAILURES = frozenset(
    {Reason.CONTACT_NOT_MAPPED, Reason.NOTE_TOO_LARGE, Reason.HTML_NORMALISATION_FAILED, Reason.BATCH_INSERT_FAILED}
)


def retry_queue(db: Database, job_id: str, reason_codes: Iterable[str] | None, *, retention_days: int) -> list[dict]:
    """The job's failed entries to retry (of the given reasons), within the retention window."""
    query: dict[str, Any] = {"job_id": job_id, "outcome": Outcome.FAILED.value}
    if reason_codes:
        query["reason_code"] = {"$in": sorted(set(reason_codes))}
    query["created_at"] = {"$gte": utc_now() - dt.timedelta(days=retention_days)}
    return list(db[NOTE_LOG].find(query))


def check_retry(db: Database, job_id: str, reason_codes: Sequence[str] | None) -> tuple[dict, list[dict]]:
    """The job and its queue if a retry may run, else Refused with a reason code. Writes nothing."""
    job = job_store.get_job(db, job_id)
    if job is None:
        raise Refused(Reason.JOB_NOT_FOUND, f"job {job_id} not found")
    cfg = RunConfig.from_dict(job["config"])
    unknown = sorted({r for r in reason_codes or () if r not in NOTE_FAILURES})
    if unknown:
        raise Refused(
            Reason.RETRY_REFUSED,
            f"not note-failure reason codes: {unknown} (retryable: {sorted(r.value for r in NOTE_FAILURES)})",
        )
    if job["state"] == State.IN_PROGRESS:
        raise Refused(Reason.JOB_ALREADY_RUNNING, f"job {job_id} is still running: retry once it has finished")
    if cfg.dry_run:
        raise Refused(Reason.RETRY_REFUSED, f"job {job_id} is a dry run: it wrote nothing to retry")
    if job["state"] == State.HALTED:
        why = (job.get("halted") or {}).get("reason")
        raise Refused(
            Reason.RETRY_REFUSED, f"job {job_id} halted ({why}): pages were not processed; re-run with force_rerun"
        )
    latest = job_store.latest_job(db, job["cid"])
    if latest is not None and latest["_id"] != job_id:
        raise Refused(Reason.RETRY_REFUSED, f"job {job_id} is superseded by job {latest['_id']} of CID {job['cid']}")
    queue = retry_queue(db, job_id, reason_codes, retention_days=cfg.thresholds.failed_record_retention_days)
    if not queue:
        which = f" with reason {sorted(set(reason_codes))}" if reason_codes else ""
        raise Refused(
            Reason.NOTHING_TO_RETRY,
            f"job {job_id} has no failed note{which} in its queue "
            f"(within {cfg.thresholds.failed_record_retention_days} days)",
        )
    if len(queue) > RETRY_MAX_NOTES:
        raise Refused(
            Reason.RETRY_REFUSED,
            f"{len(queue)} failed notes > {RETRY_MAX_NOTES} per retry: re-run the CID with force_rerun",
        )
    return job, queue


def retry_job(
    crm,
    db: Database,
    job_id: str,
    reason_codes: Sequence[str] | None = None,
    *,
    requested_by: str,
    relink=None,
) -> dict[str, Any]:
    """Retry the queue under the CID's lock; returns the retry's record. `relink(page)` relinks a page's files
    (the API passes relink.relink_page with the S3 buckets; None: no relinking)."""
    job, queue = check_retry(db, job_id, reason_codes)
    cfg = RunConfig.from_dict(job["config"])
    number = len(job.get("retries") or []) + 1
    run_id = f"retry:{job_id}:{number}"
    start.lock_cid(db, cfg, job_id=job_id, run_id=run_id)
    try:
        job, queue = check_retry(db, job_id, reason_codes)  # again, under the lock
        started = utc_now()
        with start.fenced_as(run_id):  # its inserts, copies and records are fenced by the retry's own hold
            record = _retry(crm, db, job, cfg, queue, relink)
            verdict = validate.validate(crm, db, job_id)
        record.update(
            number=number,
            requested_by=requested_by,
            reason_codes=sorted(set(reason_codes)) if reason_codes else None,
            started_at=started,
            finished_at=utc_now(),
            verdict=verdict.state.value,
        )
        stored = {k: v for k, v in record.items() if k != "recovered_note_ids"}  # ids: in the answer and the audit
        retries = [*(job.get("retries") or []), stored]
        job_store.update_job(db, job_id, retries=retries, retry=summary(retries))
    finally:
        job_store.release_lock(db, cfg.cid, run_id)
    return as_plain(record) or {}


def run_retry(crm, db: Database, job_id: str, reason_codes: Sequence[str] | None, *, requested_by: str) -> dict:
    """What the Ops API's route and the CLI's `retry` run: retry_job with the files of the touched pages
    relinked through the configured buckets (crm_s3 → cdp_s3). Returns the retry's record; Refused as check_retry."""
    from notes_migration.domain.config import CDP_S3_CONN_ID, CRM_S3_CONN_ID
    from notes_migration.run import relink
    from notes_migration.stores import s3_store as s3

    check_retry(db, job_id, reason_codes)  # before any connection to S3: a refusal is cheap
    source, target = s3.bucket_for(CRM_S3_CONN_ID), s3.bucket_for(CDP_S3_CONN_ID)

    def relink_files(page: dict[str, int]) -> Any:
        return relink.relink_page(crm, db, job_id, page, source=source, target=target)

    return retry_job(crm, db, job_id, reason_codes, requested_by=requested_by, relink=relink_files)


def outcome(db: Database, job_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The answer to a retry (API and CLI): the job's state after it, this retry's record, the job's totals."""
    job = job_store.get_job(db, job_id) or {}
    return {
        "job_id": job_id,
        "cid": job.get("cid"),
        "status": job.get("state"),
        "retry": record,
        "totals": job.get("retry"),
    }


def summary(retries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the status shows: how many retries, notes retried and recovered in all, and the last one."""
    last = retries[-1] if retries else None
    return {
        "retries": len(retries),
        "retried": sum(int(r.get("retried") or 0) for r in retries),
        "recovered": sum(int(r.get("recovered") or 0) for r in retries),
        "last": dict(last) if last else None,
    }


def _remember_contacts(db: Database, job_id: str, contacts: dict) -> None:
    """The retry's fresh answers join the run's saved person map, so validation compares the notes it
    recovers with the contacts they were written with. A run that saved no map is left without one
    (its validation resolves every person afresh)."""
    saved = job_store.load_person_map(db, job_id)
    if saved is not None and contacts:
        job_store.save_person_map(db, job_id, {**saved, **{p: match.contact_id for p, match in contacts.items()}})


@dataclass
class _Moved:
    """What a retry changes in the job's bookkeeping: the queue entries it drops, the entries and events it
    adds, the notes it recovered (legacy id → CDP note id) and the new outcomes, counted."""

    drop: list[str] = field(default_factory=list)
    entries: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    recovered: dict[int, Any] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    still_failed: Counter[str] = field(default_factory=Counter)


def _retry(crm, db: Database, job: dict, cfg: RunConfig, queue: list[dict], relink) -> dict[str, Any]:
    job_id = job["_id"]
    by_note = {int(e["legacy_crm_note_id"]): e for e in queue}
    decisions, result = _reinsert(crm, db, job, cfg, sorted(by_note))
    pages = {p["_id"]: p for p in db[PAGES].find({"_id": {"$in": sorted({e["job_page"] for e in queue})}})}
    moved = _Moved()
    read = {d.note_id for d in decisions}
    for note_id, entry in by_note.items():  # a queued note the CRM no longer has stays failed as it was
        if note_id not in read:
            moved.still_failed[entry["reason_code"]] += 1
    for d in decisions:
        old = by_note[d.note_id]
        _move(moved, pages[old["job_page"]], old, d, result)
    _record(db, job, cfg, pages, moved)
    relinked = _relink_touched(pages, by_note, moved.recovered, relink)
    log.info(
        "retry of job %s: %d retried, %d recovered, still failed %s",
        job_id,
        len(queue),
        len(moved.recovered),
        moved.still_failed,
    )
    return {
        "retried": len(queue),
        "recovered": len(moved.recovered),
        "outcomes": dict(moved.outcomes),
        "still_failed_by_reason": dict(moved.still_failed),
        "recovered_note_ids": sorted(moved.recovered),
        "pages_relinked": relinked,
    }


def _reinsert(
    crm, db: Database, job: dict, cfg: RunConfig, note_ids: list[int]
) -> tuple[list[Decision], cdp_store.WriteResult]:
    """The queued notes read again, their persons resolved afresh (the run's saved map predates a backfill),
    decided and inserted like a page's."""
    rows = crm_source.read_notes(crm, cfg.cid, note_ids)
    persons = {r.crm_person_id for r in rows}
    contacts = resolve_contacts(persons, cdp_store.find_contacts(db, cfg.company_sso_id, persons))  # fresh
    _remember_contacts(db, job["_id"], contacts)
    decisions = batch.transform_page(rows, db, cfg, contacts)
    docs = [d.doc for d in decisions if d.doc is not None]
    start.check_fence(db, job)
    writer = cdp_api.note_writer(db, cfg.thresholds)  # the job's own writer (its snapshot): mongo or http
    try:
        result = writer.write(docs) if docs else cdp_store.WriteResult()
    except cdp_api.Unauthorized as refused:  # the service wrote nothing of it
        raise Refused(Reason.CDP_API_UNAUTHORIZED, f"{refused.detail}; check the cdp_notes_api connection") from None
    return decisions, result


def _move(moved: _Moved, page: dict, old: Mapping[str, Any], d: Decision, result: cdp_store.WriteResult) -> None:
    """One queued note moved from its failure to its new outcome: on its page's counters (accounting.tally)
    and in the note log and events, with the records a batch writes for that outcome."""
    job_id, cid, job_page = old["job_id"], old["cid"], old["job_page"]
    batch.insert_failed(d, result)
    tally(page, Outcome.FAILED, old["reason_code"], -1)
    if d.failure is not None:
        moved.still_failed[d.failure.value] += 1
        moved.outcomes[Outcome.FAILED.value] += 1
        tally(page, Outcome.FAILED, d.failure)
        if d.failure.value != old["reason_code"]:  # its new reason replaces the entry, queued since the same time
            moved.drop.append(old["_id"])
            moved.entries.append(
                job_store.note_log_entry(
                    job_id, cid, job_page, d.note_id, Outcome.FAILED, d.failure, d.details, created_at=old["created_at"]
                )
            )
            moved.events.append(batch.failure_event(job_id, cid, d, retry=True))
        return
    moved.drop.append(old["_id"])
    if d.skip is not None:
        moved.outcomes[Outcome.SKIPPED.value] += 1
        tally(page, Outcome.SKIPPED, d.skip)
        moved.entries.append(
            job_store.note_log_entry(job_id, cid, job_page, d.note_id, Outcome.SKIPPED, d.skip, d.details)
        )
        return
    if d.note_id in result.already_migrated:
        moved.outcomes[Outcome.ALREADY_MIGRATED.value] += 1
        tally(page, Outcome.ALREADY_MIGRATED)
        return
    moved.outcomes[Outcome.MIGRATED.value] += 1
    moved.recovered[d.note_id] = result.inserted.get(d.note_id)
    tally(page, Outcome.MIGRATED)
    page["owners_unresolved"] = int(page.get("owners_unresolved") or 0) + int(d.owner_unresolved)
    if d.checkin_dropped:
        page["checkins_dropped"] = int(page.get("checkins_dropped") or 0) + 1
    entries, events = batch.migrated_records(job_id, cid, job_page, d)
    moved.entries += entries
    moved.events += events


def _record(db: Database, job: dict, cfg: RunConfig, pages: dict[str, dict], moved: _Moved) -> None:
    """The bookkeeping, under the lock: the queue entries, the events, the audit, then the page results
    replaced whole."""
    job_id = job["_id"]
    if moved.drop:
        db[NOTE_LOG].delete_many({"_id": {"$in": moved.drop}})
    job_store.insert_note_log(db, moved.entries)
    job_store.record_events(db, moved.events)
    number = len(job.get("retries") or []) + 1
    if moved.recovered:
        audit_id = f"{job_id}:retry:{number}"
        job_store.record_audit(
            db, job_store.audit_record(audit_id, job_id, cfg.cid, cfg.company_sso_id, moved.recovered)
        )
    for page in pages.values():
        page["retried_at"] = utc_now()
        job_store.save_page_result(db, page)


def _relink_touched(pages: dict[str, dict], by_note: dict[int, dict], recovered: dict[int, Any], relink) -> int:
    """The files of the pages whose notes the retry recovered, relinked; how many pages."""
    relinked = 0
    if relink is not None and recovered:
        touched = sorted({by_note[n]["job_page"] for n in recovered})
        for key in touched:
            p = pages[key]
            relink({"page_no": p["page_no"], "lo_id": p["lo_id"], "hi_id": p["hi_id"]})
            relinked += 1
    return relinked
