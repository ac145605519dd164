"""Step 6 of a run: the count and content check of the migrated notes against the source, and the verdict."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pymongo.database import Database

from notes_migration.domain.accounting import Totals, Verdict, decide_verdict, match_pct, sum_pages
from notes_migration.domain.codes import (
    Event,
    Reason,
    State,
)
from notes_migration.domain.config import (
    RunConfig,
)
from notes_migration.domain.events import event
from notes_migration.domain.plain import utc_now
from notes_migration.domain.resolve import saved_matches
from notes_migration.domain.transform import (
    COMPARED_PROJECTION,
    comparable,
    content_mismatches,
)
from notes_migration.run.batch import transform_page
from notes_migration.run.coverage import resolve_all_persons
from notes_migration.run.relink import summarise_job as summarise_attachments
from notes_migration.run.start import check_fence, load_job, record_run_error
from notes_migration.stores import cdp_api, cdp_store, crm_source, job_store, metrics
from notes_migration.stores.crm_source import CrmExtractFailed

log = logging.getLogger(__name__)


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cycle collector off for a bulk pass whose objects form no cycles (reference counting
    still frees them): otherwise it keeps re-walking the content check's live comparables, a
    noticeable share of the check's CPU on a large CID."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@cyclic_gc_paused()
def content_check(crm, db: Database, cfg: RunConfig, sample_limit: int = 20, job_id: str | None = None) -> dict:
    """Every in-scope source note vs its CDP document: presence, contact, owner, timestamps, HTML hash.

    Two passes at once: a thread streams the company's migrated notes (the server's work) while this
    one transforms the source page by page (the client's work); both sides are kept in their `comparable`
    form (HTML as a digest), then compared. The contacts are the run's own answers (the map the coverage
    step saved for `job_id`, the one its pages wrote with), resolved afresh only when the run saved none:
    re-reading the company's contacts is one of FerretDB's slowest reads, and it came before any transform."""

    def read_stored() -> dict[int, tuple]:
        return {
            doc["legacy_crm_note_id"]: comparable(doc)
            for doc in cdp_store.migrated_notes(db, cfg.company_sso_id, COMPARED_PROJECTION)
        }

    derived: dict[int, tuple | None] = {}  # in-scope source note → what it yields now (None: no document)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="content-check") as pool:
        stored_f = pool.submit(read_stored)
        saved = job_store.load_person_map(db, job_id) if job_id else None
        if saved is None:
            _, contacts = resolve_all_persons(crm, db, cfg.cid, cfg.company_sso_id, cfg.include_activities)
        else:
            contacts = saved_matches(saved)
        users = cdp_store.company_users(db, cfg.company_sso_id)  # once for the run, not once per page
        for rows in crm_source.iter_pages(crm, cfg.cid, max(cfg.batch_size, 500)):
            in_scope = [r for r in rows if cfg.include_activities or not r.is_activity]
            for d in transform_page(in_scope, db, cfg, contacts, users=users):
                derived[d.note_id] = comparable(d.doc) if d.doc is not None else None
        stored = stored_f.result()
    found = mismatch_count = 0
    mismatches: list[dict] = []
    for note_id, now in derived.items():  # source order
        if note_id not in stored:
            continue
        found += 1
        if now is None:
            continue  # no longer resolvable: counted as present, compared on nothing
        problems = content_mismatches(now, stored[note_id])
        if problems:
            mismatch_count += 1
            if len(mismatches) < sample_limit:
                mismatches.append({"legacy_crm_note_id": note_id, "fields": problems})
    return {
        "expected": len(derived),
        "found": found,
        "match_pct": match_pct(len(derived), found),
        "content_mismatches": mismatch_count,
        "mismatch_samples": mismatches,
    }


def counted_by_service(report: dict[str, Any], cfg: RunConfig) -> dict[str, Any]:
    """On the HTTP path the CDP count is the service's source-scoped count (GET /cdp/notes/migrated/count), not a
    read of contact_notes; the content check's own presence figure stays as `content_found`. Raises
    cdp_api.Unavailable when the count stays unavailable after its retries (VALIDATION_SKIPPED)."""
    count = cdp_api.count_migrated(cfg.thresholds, cfg.company_sso_id)
    return {
        **report,
        "content_found": report["found"],
        "found": count,
        "match_pct": match_pct(report["expected"], count),
    }


def _judge(crm, db: Database, job: dict, cfg: RunConfig, totals: Totals) -> tuple[dict[str, Any], Verdict]:
    """The validation report (content_check, unless the run halted or was a dry run) and the verdict on it."""
    job_id = job["_id"]
    attachments = job.get("attachments") or {}
    halted = (job.get("halted") or {}).get("reason") if job.get("state") == State.HALTED else None
    if halted or cfg.dry_run:
        report: dict[str, Any] = {"skipped": "halted" if halted else "dry_run"}
        verdict = decide_verdict(
            halted_reason=halted,
            match=None,
            failure_rate=totals.failure_rate,
            mismatches=0,
            min_match_pct=cfg.thresholds.validation_match_pct,
            max_failure_rate=cfg.thresholds.max_failure_rate,
            dry_run=cfg.dry_run,
            attachment_failure_share=attachments.get("failure_share", 0.0),
        )
    else:
        try:
            report = content_check(crm, db, cfg, job_id=job_id)
            if cdp_api.uses_http(cfg.thresholds):
                report = counted_by_service(report, cfg)
        except (CrmExtractFailed, cdp_api.Unavailable) as unavailable:  # PRD §9 #8: a count source is down
            log.error("validation of job %s skipped: %s", job_id, unavailable)
            partial = report if isinstance(unavailable, cdp_api.Unavailable) else {}
            report = {
                **{k: v for k, v in partial.items() if k not in ("found", "match_pct")},
                "skipped": Reason.VALIDATION_SKIPPED.value,
                "details": str(unavailable),
            }
            record_run_error(db, job, Reason.VALIDATION_SKIPPED, f"validate: {unavailable}")
        report["read"] = dict(cdp_api.describe(cfg.thresholds))
        verdict = decide_verdict(
            halted_reason=None,
            match=report.get("match_pct"),
            failure_rate=totals.failure_rate,
            mismatches=report.get("content_mismatches", 0),
            min_match_pct=cfg.thresholds.validation_match_pct,
            max_failure_rate=cfg.thresholds.max_failure_rate,
            attachment_failure_share=attachments.get("failure_share", 0.0),
            validation_skipped=Reason.VALIDATION_SKIPPED.value if "match_pct" not in report else None,
        )
    return report, verdict


def validate(crm, db: Database, job_id: str) -> Verdict:
    job, _ = load_job(db, job_id)
    if job.get("state") == State.IN_PROGRESS:
        check_fence(db, job)  # its verdict is a write: only the CID's holder judges
    summarise_attachments(db, job_id)  # final attachment figures onto the job before the verdict reads them
    job, cfg = load_job(db, job_id)
    totals = sum_pages(job_store.page_results(db, job_id))
    report, verdict = _judge(crm, db, job, cfg, totals)
    report["failure_rate"] = verdict.failure_rate
    job_store.update_job(
        db,
        job_id,
        state=verdict.state.value,
        validation=report,
        totals=totals.as_dict(),
        verdict=verdict.as_dict(),
        finished_at=utc_now(),
    )
    job_store.record_events(
        db,
        [
            event(
                Event.COMPLETED,
                job_id=job_id,
                cid=cfg.cid,
                subject="final",
                status=verdict.state.value,
                match_pct=verdict.match_pct,
                failure_rate=verdict.failure_rate,
                notes_migrated=report.get("found"),
                content_mismatches=verdict.content_mismatches,
                validation_skipped=verdict.validation_skipped,
            )
        ],
    )
    metrics.run_finished(cfg.cid, verdict.state.value)
    return verdict
