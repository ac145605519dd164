"""The steps of one run, over an open CRM connection and the CDP database.

Each function is one task body of the DAG (tasks.py adds the Airflow edges).
Every step is idempotent: re-running it, or the whole run, gives the same end
state. Refusals and halts are exceptions carrying a reason code.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pymongo.database import Database

from notes_migration import cdp_store, crm_source, housekeeping, job_store, metrics
from notes_migration.accounting import Verdict, decide_verdict, match_pct, sum_pages
from notes_migration.attachments import summarise_job as summarise_attachments
from notes_migration.codes import RUN_ERROR_OUTCOME, AlreadyHalted, Event, Halted, Outcome, Reason, Refused, State
from notes_migration.config import DAG_ID, RunConfig, job_id_for
from notes_migration.crm_source import CrmExtractFailed
from notes_migration.events import event
from notes_migration.plain import utc_now
from notes_migration.preflight import check_preconditions, coverage_report, resolve_all_persons
from notes_migration.resolve import ContactMatch, resolve_contacts, resolve_owners, saved_matches
from notes_migration.transform import COMPARED_PROJECTION, Decision, comparable, content_mismatches, crm_users, decide

log = logging.getLogger(__name__)
__all__ = ["AlreadyHalted", "Halted", "Refused", "job_id_for"]  # re-exported: callers catch them from here


def _job(db: Database, job_id: str) -> tuple[dict, RunConfig]:
    job = job_store.get_job(db, job_id)
    if job is None:
        raise LookupError(f"job {job_id} not found")
    return job, RunConfig.from_dict(job["config"])


# --------------------------------------------------------------------------- 1. preconditions


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
        purged = housekeeping.purge_note_log_if_overdue(db, cfg.thresholds.failed_record_retention_days)
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
    job, _ = _job(db, job_id)
    if job.get("state") == State.HALTED:
        return
    details = f"{step}: {failure}"
    record_run_error(db, job, Reason.CRM_EXTRACT_FAILED, details)
    halt_job(db, job, Reason.CRM_EXTRACT_FAILED, step=step, details=details)


# --------------------------------------------------------------------------- 2. coverage


def run_coverage(crm, db: Database, job_id: str) -> dict:
    """The coverage gate; the person → contact answers it computed are kept for the pages (one
    resolution per run, so every page of a run sees the same answer and no page queries contacts)."""
    job, cfg = _job(db, job_id)
    resolved = resolve_all_persons(crm, db, cfg.cid, cfg.company_sso_id, cfg.include_activities)
    report = coverage_report(
        crm,
        db,
        cfg.cid,
        cfg.company_sso_id,
        include_activities=cfg.include_activities,
        gate=cfg.thresholds.coverage_gate,
        resolved=resolved,
    )
    job_store.save_person_map(db, job_id, {p: m.contact_id for p, m in resolved[1].items()})
    job_store.update_job(db, job_id, coverage=report)
    if not report["passes_gate"]:
        halt_job(db, job, Reason.COVERAGE_BELOW_GATE, coverage=report)
        raise Halted(
            Reason.COVERAGE_BELOW_GATE,
            f"{report['coverage_pct']}% of in-scope notes resolve to a contact, gate {report['gate_pct']}%; "
            f"{report['persons_unmapped']} persons unmapped (e.g. {report['unmapped_person_ids_sample'][:5]})",
        )
    return report


# --------------------------------------------------------------------------- 3. plan


def plan(crm, db: Database, job_id: str) -> list[dict]:
    """Task pages of ≤ MAX_TASK_PAGES, each up to k insert batches (pages.py)."""
    from notes_migration import pages

    return pages.plan(crm, db, job_id)


# --------------------------------------------------------------------------- 4. migrate one page


def _log_entry(job: dict, page_no: int, note_id: int, outcome: Outcome, reason: Reason, details: str) -> dict:
    return {
        "_id": f"{job['_id']}:{note_id}:{reason.value}",
        "job_id": job["_id"],
        "job_page": job_store.page_key(job["_id"], page_no),
        "cid": job["cid"],
        "legacy_crm_note_id": note_id,
        "outcome": outcome.value,
        "reason_code": reason.value,
        "details": details,
        "created_at": utc_now(),
    }


def page_contacts(db: Database, job_id: str, cfg: RunConfig, rows) -> dict[int, ContactMatch]:
    """The run's person → contact answers (saved by the coverage step); resolved here only if absent."""
    saved = job_store.load_person_map(db, job_id)
    if saved is not None:
        return saved_matches(saved)
    persons = {r.crm_person_id for r in rows}
    return resolve_contacts(persons, cdp_store.find_contacts(db, cfg.company_sso_id, persons))


def transform_page(
    rows, db: Database, cfg: RunConfig, contacts: dict[int, ContactMatch], users: list[dict] | None = None
) -> list[Decision]:
    """Bulk owner resolution (one users query, unless the caller fetched `users`) then one decision per row."""
    users = cdp_store.company_users(db, cfg.company_sso_id) if users is None else users
    owners = resolve_owners(crm_users(rows), users)
    return [
        decide(
            r,
            company_sso_id=cfg.company_sso_id,
            include_activities=cfg.include_activities,
            contacts=contacts,
            owners=owners,
            note_size_cap_bytes=cfg.thresholds.note_size_cap_bytes,
        )
        for r in rows
    ]


def migrate_page(crm, db: Database, job_id: str, page: dict, writer: cdp_store.MongoNoteWriter | None = None) -> dict:
    """Decide every note of the page, re-check the halt, insert, account (pages.py says how)."""
    from notes_migration import pages

    return pages.migrate_page(crm, db, job_id, page, writer)


# --------------------------------------------------------------------------- 6. validate


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cycle collector off for a bulk pass whose objects form no cycles (reference counting
    still frees them): it kept re-walking the content check's ~140,000 live comparables, ~15% of the
    check's CPU at a 71,000-note CID (4.8-5.2 CPU-s with it, 4.25-4.3 without)."""
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
    re-reading the company's contacts cost FerretDB ~2.4 s at 25,000 contacts, before any transform."""

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


def validate(crm, db: Database, job_id: str) -> Verdict:
    summarise_attachments(db, job_id)  # final attachment figures onto the job before the verdict reads them
    job, cfg = _job(db, job_id)
    totals = sum_pages(job_store.page_results(db, job_id))
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
        except CrmExtractFailed as unavailable:  # PRD §9 #8: the count source is down after retries
            log.error("validation of job %s skipped: %s", job_id, unavailable)
            report = {"skipped": Reason.VALIDATION_SKIPPED.value, "details": str(unavailable)}
            record_run_error(db, job, Reason.VALIDATION_SKIPPED, f"validate: {unavailable}")
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


# --------------------------------------------------------------------------- 7. teardown


def release(db: Database, cid: int, run_id: str) -> bool:
    released = job_store.release_lock(db, cid, run_id)
    log.info("lock of CID %s %s", cid, "released" if released else "was not held by this run")
    return released
