"""The relink step of one page (what AttachmentRelinkOperator calls): plan the page's files
(attachment_plan.py), copy them (copy_engine.py), set each note's whole `attachments`
array in one `$set`, in the same order every run (a re-run never duplicates an entry),
and record the page's result, reason-coded file records and events.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database

from notes_migration.domain.accounting import attachment_figures
from notes_migration.domain.attachment_plan import (
    FilePlan,
    FileResult,
    attachment_entries,
    declared_mime_differs,
    merged_attachments,
    plan_note_files,
    skipped_result,
)
from notes_migration.domain.codes import AttachmentOutcome, Event, Reason, State
from notes_migration.domain.config import RunConfig
from notes_migration.domain.events import event
from notes_migration.domain.plain import utc_now
from notes_migration.domain.rows import FileRow, batches_of
from notes_migration.run.copy_engine import RetryPolicy, copy_files, target_listing
from notes_migration.run.start import check_fence, holds_cid
from notes_migration.stores import cdp_api, cdp_store, crm_source, job_store, metrics
from notes_migration.stores import s3_store as s3

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- one page (the operator's call)


def _bucket(b: s3.Bucket | Callable[[], s3.Bucket]) -> s3.Bucket:
    return b if isinstance(b, s3.Bucket) else b()


class RelinkSkipped(Exception):
    """Nothing to relink for this page (the run halted): the task is skipped. A dry run plans instead."""


def relink_page(
    crm,
    db: Database,
    job_id: str,
    page: Mapping[str, Any],
    *,
    source: s3.Bucket | Callable[[], s3.Bucket],
    target: s3.Bucket | Callable[[], s3.Bucket],
    concurrency: int | None = None,
    retry: RetryPolicy | None = None,
    first_attempt: bool = False,
) -> dict[str, Any]:
    """Relink one task page: its batches one after another (each its own attachment result, as
    migrate_page accounts them), their files read in one CRM query, the S3 clients built once for all
    of them; then their file records in one insert (`_record`), the lock's heartbeat and the job's live
    attachment figures (each write reads every attachment result of the job), once per task page rather
    than per batch, since every FerretDB command costs a scan. Returns the counters summed.

    `first_attempt` (the operator's first try of this task): no earlier attempt can have left file
    records for these pages of this job, so they are not deleted first (on FerretDB v1 that delete
    scans the whole note log). Anyone else relinks with the delete (a retry, a failed-record retry, a
    test)."""
    buckets: dict[str, s3.Bucket] = {}

    def once(name: str, b: s3.Bucket | Callable[[], s3.Bucket]) -> Callable[[], s3.Bucket]:
        return lambda: buckets[name] if name in buckets else buckets.setdefault(name, _bucket(b))

    src, dst = once("source", source), once("target", target)
    batches = batches_of(page)
    job = _relinkable_job(db, job_id)
    cfg = RunConfig.from_dict(job["config"])
    summary: dict[str, Any] = {"page_no": page["page_no"]}
    if cfg.dry_run:
        outcomes = [plan_page(crm, db, job, b, source=src(), target=dst(), concurrency=concurrency) for b in batches]
    else:
        files = _files_by_batch(crm, cfg.cid, batches)
        done: list[BatchRelinked] = []
        try:
            for b in batches:
                rows = files[b["page_no"]]
                done.append(
                    relink_batch(crm, db, job, b, rows, source=src, target=dst, concurrency=concurrency, retry=retry)
                )
        finally:  # a halt or a failure mid-page: the batches already relinked keep their records (if still ours)
            if done and holds_cid(db, job):
                _record(db, job, done, clear=not first_attempt)
        outcomes = [d.counters for d in done]
    for one in outcomes:
        for k, v in one.items():
            if k != "page_no":
                summary[k] = summary.get(k, 0) + v
    job_store.heartbeat_lock(db, cfg.cid, job["run_id"])
    summarise_job(db, job_id)  # live figures; validate recomputes them once every page is done
    return summary


def _relinkable_job(db: Database, job_id: str) -> dict[str, Any]:
    """The job, unless it is gone (LookupError), halted (RelinkSkipped) or its writer no longer holds the CID
    (Fenced): read before a page starts and again before a batch copies files or updates notes."""
    job = job_store.get_job(db, job_id)
    if job is None:
        raise LookupError(f"job {job_id} not found")
    if job.get("state") == State.HALTED:
        raise RelinkSkipped(f"job {job_id} halted ({(job.get('halted') or {}).get('reason')}): no relinking")
    if not job["config"].get("dry_run"):
        check_fence(db, job)
    return job


def _files_by_batch(crm, cid: int, batches: list[dict[str, Any]]) -> dict[int, list[FileRow]]:
    """The files of every batch of a task page, read in one query over the task page's id range (the files
    of a note between two batches, one out of scope, belong to no batch and are dropped)."""
    out: dict[int, list[FileRow]] = {b["page_no"]: [] for b in batches}
    bounds = sorted((b["lo_id"], b["hi_id"], b["page_no"]) for b in batches)
    for row in crm_source.read_page_files(crm, cid, bounds[0][0], bounds[-1][1]):
        i = bisect.bisect_right(bounds, (row.note_id, math.inf, math.inf)) - 1
        if i >= 0 and bounds[i][0] <= row.note_id <= bounds[i][1]:
            out[bounds[i][2]].append(row)
    return out


@dataclass
class BatchRelinked:
    """One batch relinked (its files copied, its notes' `attachments` set), its records not yet written."""

    job_page: str
    page_doc: dict[str, Any]
    entries: list[dict[str, Any]]
    events: list[dict[str, Any]]
    found_notes: bool  # some of its notes are in CDP (a retry then replaces their earlier file records)

    @property
    def counters(self) -> dict[str, Any]:
        keys = ("page_no", "files", "relinked", "copied", "reused", "failed", "skipped", "notes_updated")
        return {k: self.page_doc[k] for k in keys}


def _record(db: Database, job: Mapping[str, Any], done: list[BatchRelinked], *, clear: bool) -> None:
    """The records of a task page's batches, written once they are all relinked: the reason-coded file
    records (one insert), the events, then each batch's result (the figures the status reads); also
    when a later batch stopped the page (a halt, a failure). A task process killed before this leaves
    none of them, and its retry relinks every batch again (`clear`: an earlier attempt may have written
    some; a first attempt has nothing to clear)."""
    job_store.replace_attachment_logs(
        db, [e for d in done for e in d.entries], clear_pages=[d.job_page for d in done if clear and d.found_notes]
    )
    job_store.record_events(db, [e for d in done for e in d.events])
    for d in done:
        job_store.save_attachment_page(db, d.page_doc)
        metrics.attachment_page_completed(d.page_doc)
        doc = d.page_doc
        log.info(
            "page %s: %d files, %d relinked (%d copied), %d failed, %d skipped, %d notes updated in %.2fs",
            doc["page_no"],
            doc["files"],
            doc["relinked"],
            doc["copied"],
            doc["failed"],
            doc["skipped"],
            doc["notes_updated"],
            doc["timings_s"]["total"],
        )


def relink_batch(
    crm,
    db: Database,
    job: dict[str, Any],
    page: Mapping[str, int],
    rows: list[FileRow],
    *,
    source: Callable[[], s3.Bucket],
    target: Callable[[], s3.Bucket],
    concurrency: int | None = None,
    retry: RetryPolicy | None = None,
) -> BatchRelinked:
    """Relink the files of one batch's migrated notes (`rows`: its files); its records are returned for
    relink_page to write. The S3 clients are built only when the batch has a file to copy, and the job is
    read again first: a run halted meanwhile copies and writes nothing more (RelinkSkipped)."""
    started = time.perf_counter()
    cfg = RunConfig.from_dict(job["config"])
    workers = concurrency or cfg.thresholds.attachment_concurrency
    planned = _plans_by_note(cfg, rows)
    notes = _notes_to_relink(db, job["_id"], page["page_no"], cfg.company_sso_id, planned)
    plans = {nid: planned[nid] for nid in sorted(notes)}
    t_read = time.perf_counter()
    results, checked = _copy(db, job, cfg, plans, source, target, workers, retry)
    t_copy = time.perf_counter()
    updates, entries, events_out = _note_records(job, cfg, page["page_no"], plans, notes, results)
    if updates and not checked:
        _relinkable_job(db, job["_id"])
    cdp_api.set_attachments(db, cfg.thresholds, cfg.company_sso_id, updates)  # the run's writer (mongo | http)
    if checked:  # copies can take long: the lock's lease is kept alive between such batches
        job_store.heartbeat_lock(db, cfg.cid, job["run_id"])
    page_doc = page_result(
        job,
        page,
        plans,
        results,
        rows_total=len(rows),
        notes_updated=len(updates),
        concurrency=workers,
        timings={
            "read": t_read - started,
            "copy": t_copy - t_read,
            "write": time.perf_counter() - t_copy,
            "total": time.perf_counter() - started,
        },
    )
    return BatchRelinked(job_store.page_key(job["_id"], page["page_no"]), page_doc, entries, events_out, bool(notes))


def _plans_by_note(
    cfg: RunConfig, rows: list[FileRow], leave_out: set[int] | frozenset[int] = frozenset()
) -> dict[int, list[FilePlan]]:
    """{legacy note id: the plans of its files}, in note order (the notes of `leave_out` have none)."""
    by_note: dict[int, list[FileRow]] = {}
    for row in rows:
        if row.note_id not in leave_out:
            by_note.setdefault(row.note_id, []).append(row)
    cap = cfg.thresholds.attachment_size_cap_bytes
    return {
        nid: plan_note_files(cfg.company_sso_id, nid, files, cap_bytes=cap) for nid, files in sorted(by_note.items())
    }


def _copy(
    db: Database,
    job: Mapping[str, Any],
    cfg: RunConfig,
    plans: Mapping[int, list[FilePlan]],
    source: Callable[[], s3.Bucket],
    target: Callable[[], s3.Bucket],
    workers: int,
    retry: RetryPolicy | None,
) -> tuple[dict[str, FileResult], bool]:
    """Each planned file's result, and whether there was anything to copy: only then are the S3 clients built
    and the target listed, after the job is read again (never after a halt, never once the run is fenced)."""
    flat = [p for ps in plans.values() for p in ps]
    results: dict[str, FileResult] = {p.ref: skipped_result(p) for p in flat if p.skip is not None}
    checked = len(results) < len(flat)
    if checked:
        _relinkable_job(db, job["_id"])
        src, dst = source(), target()
        known = target_listing(dst, cfg.company_sso_id, sorted(plans))
        cap = cfg.thresholds.attachment_size_cap_bytes
        results = copy_files(flat, src, dst, cap_bytes=cap, concurrency=workers, retry=retry, known=known)
    return results, checked


def _note_records(
    job: Mapping[str, Any],
    cfg: RunConfig,
    page_no: int,
    plans: Mapping[int, list[FilePlan]],
    notes: Mapping[int, dict[str, Any]],
    results: Mapping[str, FileResult],
) -> tuple[list[tuple[Any, int, list]], list[dict[str, Any]], list[dict[str, Any]]]:
    """What the copies decide: each note's new `attachments` ((CDP _id, legacy id, attachments)) (only where it changed), and a reason-coded
    record for every file not relinked, with an event for each failed one."""
    updates, entries, events_out = [], [], []
    for nid, note_plans in plans.items():
        attachments = merged_attachments(
            notes[nid].get("attachments"), attachment_entries(note_plans, results, cfg.thresholds.proxy_url_base)
        )
        if attachments != list(notes[nid].get("attachments") or []):
            updates.append((notes[nid]["_id"], nid, attachments))
        for plan in note_plans:
            r = results[plan.ref]
            if r.outcome == AttachmentOutcome.RELINKED:
                continue
            entries.append(_log_entry(job, page_no, nid, plan, r))
            if r.outcome == AttachmentOutcome.FAILED:
                events_out.append(_failed_event(job, cfg, nid, plan, r))
    return updates, entries, events_out


def _failed_event(job: Mapping[str, Any], cfg: RunConfig, nid: int, plan: FilePlan, r: FileResult) -> dict[str, Any]:
    return event(
        Event.ATTACHMENT_FAILED,
        job_id=job["_id"],
        cid=cfg.cid,
        subject=f"{nid}:{plan.ref}",
        legacy_crm_note_id=nid,
        file=plan.ref,
        file_name=plan.name,
        key=plan.key,
        reason_code=r.reason.value if r.reason else None,
        attempts=r.attempts,
        details=r.details,
    )


def _notes_to_relink(
    db: Database, job_id: str, page_no: int, company_sso_id: str, planned: Mapping[int, list[FilePlan]]
) -> dict[int, dict[str, Any]]:
    """{legacy id: its CDP note (_id, attachments)} of the page's notes that are in CDP.

    On FerretDB v1 every lookup scans `contact_notes`, so lookups are spared where the job already knows
    the answer: when the page's result says its one attempt finished, inserted every note it found in
    CDP (none already migrated, no failed-record retry since) and its audit record maps exactly the notes
    it inserted, the notes in CDP are the audited ones. Of those, a note with a file to copy or to mark
    unavailable is read (its own attachments are merged); a note whose every file is skipped gets no
    write and is known to hold the empty `attachments` it was inserted with, so it is not read; a note
    not audited is not in CDP. In any other case every note is looked up."""
    projection = {"_id": 1, "legacy_crm_note_id": 1, "attachments": 1}
    result = job_store.page_result(db, job_id, page_no) if planned else None
    inserted = None
    if (
        result is not None
        and result.get("state") == "done"
        and int(result.get("attempt") or 0) == 1
        and not result.get("already_migrated")
        and not result.get("retried_at")
    ):
        migrated = int(result.get("migrated") or 0)
        inserted = job_store.audit_note_ids(db, job_store.page_key(job_id, page_no)) if migrated else set()
        if inserted is not None and len(inserted) != migrated:
            inserted = None  # the audit does not match the result: do not trust it
    if inserted is None:
        found = cdp_store.stored_notes(db, company_sso_id, sorted(planned), projection)
        return {d["legacy_crm_note_id"]: d for d in found}
    ours = {nid: ps for nid, ps in planned.items() if nid in inserted}
    to_read = sorted(nid for nid, ps in ours.items() if any(p.skip is None for p in ps))
    notes = {d["legacy_crm_note_id"]: d for d in cdp_store.stored_notes(db, company_sso_id, to_read, projection)}
    for nid, ps in ours.items():
        if all(p.skip is not None for p in ps):
            notes[nid] = {"_id": None, "legacy_crm_note_id": nid, "attachments": []}
    return notes


# --------------------------------------------------------------------------- the plan of a dry run


def plan_page(
    crm,
    db: Database,
    job: Mapping[str, Any],
    page: Mapping[str, int],
    *,
    source: s3.Bucket,
    target: s3.Bucket,
    concurrency: int | None = None,
) -> dict[str, Any]:
    """A dry run's relink step: what the real step would copy for this page, from object metadata only.

    The notes are those the dry run decided to write (the page's rows minus its failed and skipped notes:
    nothing is in CDP to read them from). Each allowlisted file under the cap gets a HEAD of its source
    (size, or missing → ATTACHMENT_DOWNLOAD_FAILED) and is looked up in one listing of the target (same
    size → reused); the rest would be copied. No object is read or written, no note updated. Content
    sniffing (an executable under an allowed name) needs the bytes, so it is not predicted."""
    started = time.perf_counter()
    cfg = RunConfig.from_dict(job["config"])
    t = cfg.thresholds
    workers = concurrency or t.attachment_concurrency
    rows = crm_source.read_page_files(crm, cfg.cid, page["lo_id"], page["hi_id"])
    flagged = job_store.page_flagged_note_ids(db, job["_id"], page["page_no"])
    plans = _plans_by_note(cfg, rows, leave_out=flagged)
    flat = [p for ps in plans.values() for p in ps]
    known = target_listing(target, cfg.company_sso_id, sorted(plans)) if flat else None
    results: dict[str, FileResult] = {p.ref: skipped_result(p) for p in flat if p.skip is not None}
    predicted, to_copy_bytes = _predict_all(
        [p for p in flat if p.skip is None], source, target, known, t.attachment_size_cap_bytes, workers
    )
    results.update(predicted)
    timings = {"read": 0.0, "copy": 0.0, "write": 0.0, "total": time.perf_counter() - started}
    page_doc = page_result(
        job, page, plans, results, rows_total=len(rows), notes_updated=0, concurrency=workers, timings=timings
    )
    page_doc.update(dry_run=True, bytes_copied=0, bytes_to_copy=to_copy_bytes, files_to_copy=page_doc["copied"])
    job_store.save_attachment_page(db, page_doc)
    job_store.heartbeat_lock(db, cfg.cid, job["run_id"])
    log.info(
        "dry run, page %s: %d files, %d to copy (%d bytes), %d already there, %d would fail, %d skipped",
        page["page_no"],
        page_doc["files"],
        page_doc["copied"],
        to_copy_bytes,
        page_doc["reused"],
        page_doc["failed"],
        page_doc["skipped"],
    )
    return {
        k: page_doc[k]
        for k in ("page_no", "files", "relinked", "copied", "reused", "failed", "skipped", "bytes_to_copy")
    }


def _predict_all(
    todo: list[FilePlan],
    source: s3.Bucket,
    target: s3.Bucket,
    known: dict[str, s3.ObjectInfo] | None,
    cap_bytes: int,
    workers: int,
) -> tuple[dict[str, FileResult], int]:
    """_predict for every file to try, `workers` at a time; their results and the bytes a real run would copy."""
    results: dict[str, FileResult] = {}
    to_copy_bytes = 0
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo))), thread_name_prefix="plan") as pool:
            for result, size in pool.map(lambda plan: _predict(plan, source, target, known, cap_bytes), todo):
                results[result.ref] = result
                to_copy_bytes += size
    return results, to_copy_bytes


def _predict(
    plan: FilePlan, source: s3.Bucket, target: s3.Bucket, known: dict[str, s3.ObjectInfo] | None, cap_bytes: int
) -> tuple[FileResult, int]:
    """What the real step would do with one file, from HEADs and the target listing; and the bytes it would copy."""
    present = (known or {}).get(plan.key) if known is not None else s3.head(target, plan.key)
    try:
        src = s3.head(source, plan.row.s3_key)
    except Exception as exc:  # predicted as the real step would end after its retries
        return FileResult(
            plan.ref, AttachmentOutcome.FAILED, Reason.ATTACHMENT_DOWNLOAD_FAILED, f"HEAD failed: {exc}"[:300]
        ), 0
    if present is not None and present.content_type in (None, plan.mime_type):
        if (src.size if src is not None else present.size) == present.size:
            return FileResult(plan.ref, AttachmentOutcome.RELINKED, size=present.size), 0
    if src is None:
        return FileResult(
            plan.ref,
            AttachmentOutcome.FAILED,
            Reason.ATTACHMENT_DOWNLOAD_FAILED,
            "source object missing (HEAD)",
            source_missing=True,
        ), 0
    if src.size > cap_bytes:
        return FileResult(
            plan.ref,
            AttachmentOutcome.SKIPPED,
            Reason.ATTACHMENT_TOO_LARGE,
            f"{src.size} bytes > cap {cap_bytes}",
            size=src.size,
        ), 0
    return FileResult(plan.ref, AttachmentOutcome.RELINKED, size=src.size, copied=True), src.size


def _log_entry(job: Mapping[str, Any], page_no: int, note_id: int, plan: FilePlan, r: FileResult) -> dict[str, Any]:
    """A reason-coded per-file record in the note log (outcome attachment_failed / attachment_skipped)."""
    return job_store.note_log_entry(
        job["_id"],
        job["cid"],
        job_store.page_key(job["_id"], page_no),  # the page's records are replaced by this key
        note_id,
        r.outcome,
        r.reason,
        r.details,
        entry_id=f"{job['_id']}:{note_id}:{plan.ref}",
        file={
            "ref": plan.ref,
            "name": plan.name,
            "key": plan.key,
            "s3_key": plan.row.s3_key,
            "size": r.size if r.size is not None else plan.row.size,
            "attempts": r.attempts,
            "source_missing": r.source_missing,
        },
    )


def page_result(
    job: Mapping[str, Any],
    page: Mapping[str, int],
    plans: Mapping[int, list[FilePlan]],
    results: Mapping[str, FileResult],
    *,
    rows_total: int,
    notes_updated: int,
    concurrency: int,
    timings: Mapping[str, float],
) -> dict[str, Any]:
    """The page's attachment counters: one document per (job, page), replaced whole on a retry."""
    flat = [(p, results[p.ref]) for ps in plans.values() for p in ps]
    failed = Counter(r.reason.value for _, r in flat if r.outcome == AttachmentOutcome.FAILED and r.reason)
    skipped = Counter(r.reason.value for _, r in flat if r.outcome == AttachmentOutcome.SKIPPED and r.reason)
    relinked = [r for _, r in flat if r.outcome == AttachmentOutcome.RELINKED]
    return {
        "_id": f"{job['_id']}:{page['page_no']}",
        "job_id": job["_id"],
        "cid": job["cid"],
        "page_no": page["page_no"],
        "lo_id": page["lo_id"],
        "hi_id": page["hi_id"],
        "notes_with_files": len(plans),
        "notes_updated": notes_updated,
        "files_without_cdp_note": rows_total - len(flat),
        "files": len(flat),
        "relinked": len(relinked),
        "copied": sum(1 for r in relinked if r.copied),
        "reused": sum(1 for r in relinked if not r.copied),
        "bytes_copied": sum(r.size or 0 for r in relinked if r.copied),
        "failed": sum(failed.values()),
        "failed_by_reason": dict(failed),
        "skipped": sum(skipped.values()),
        "skipped_by_reason": dict(skipped),
        "source_missing": sum(1 for _, r in flat if r.source_missing),
        "content_type_corrected": sum(
            1
            for p, r in flat
            if r.outcome == AttachmentOutcome.RELINKED
            and p.mime_type
            and declared_mime_differs(p.row.content_type, p.mime_type)
        ),
        "file_ms": sorted(
            round(r.seconds * 1000) for _, r in flat if r.outcome != AttachmentOutcome.SKIPPED or r.attempts
        ),
        "concurrency": concurrency,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "finished_at": utc_now(),
    }


def summarise_job(db: Database, job_id: str) -> dict[str, Any] | None:
    """Write the job's attachment figures from its page results; None (nothing written) when no page relinked."""
    pages = job_store.attachment_page_results(db, job_id)
    if not pages:
        return None
    job = job_store.get_job(db, job_id) or {}
    gate = RunConfig.from_dict(job["config"]).thresholds.attachment_relink_gate if job.get("config") else 0.95
    figures = attachment_figures(pages, gate=gate, pages_total=job.get("pages_total"))
    job_store.update_job(db, job_id, attachments=figures)
    return figures
