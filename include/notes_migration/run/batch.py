"""Step 3 and 4 of a run: planning task pages and migrating one page (migration.plan / migrate_page).

A *batch* is the PRD's insert unit (`batch_size` notes, ≤ 1000) and the unit of every page result,
note-log key and audit record below ("page" from here on); a *task page* is what one mapped task
processes: k consecutive batches, one after another (config.TARGET_TASK_PAGES says how k is chosen),
so that a large CID does not pay a task's start-up per batch and no run has more than MAX_TASK_PAGES
mapped tasks, while a small CID still gets one task per batch.

Halting with parallel pages (design: "a page decides its notes' outcomes before it writes"):

1. the page reads, resolves and normalises, so every note's outcome is decided before any write;
2. it publishes those decisions as its *provisional* page result (decided failures and attempted
   notes, nothing migrated yet), replacing whatever an earlier attempt of the same page left;
3. then, immediately before its insert, it re-reads the run's halt state and every page result of
   the job (other pages' final or provisional results) and judges the failure rate over all of
   them plus its own decided failures (accounting.should_halt);
4. a page that would cross the threshold (or finds the run halted) records its decided failures,
   reason-coded, inserts nothing, and halts the run; otherwise it inserts (its decided skips and
   failures, their events and the lock's heartbeat written beside the insert), then writes its final
   result, audit, and the note log and events the insert decided (in parallel: they do not depend on
   each other).

Because every page publishes (2) before it checks (3), of any set of pages running at once the
last one to check sees all of their decisions: only pages whose check came before the crossing
point can insert. After a halt nothing more is inserted except inserts already past their check.

Round trips per page: job (the person map read beside it), users (in parallel with the CRM read;
both read once per task page),
provisional result (which also says whether an earlier attempt exists: only then is the note log
of the page deleted), job + page results (in parallel), the insert of each batch with the decided
note log, events and heartbeat beside it, then final result, audit (an insert), the insert's note log
(when it has any) and events, in parallel. FerretDB v1 runs every filtered command as a scan of its
collection, so an insert is the cheapest round trip there is."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pymongo.database import Database

from notes_migration.domain.accounting import Totals, should_halt, sum_pages
from notes_migration.domain.codes import (
    AlreadyHalted,
    Event,
    Halted,
    Outcome,
    Reason,
    State,
)
from notes_migration.domain.config import (
    RunConfig,
)
from notes_migration.domain.events import event
from notes_migration.domain.plain import utc_now
from notes_migration.domain.resolve import ContactMatch, resolve_contacts, resolve_owners, saved_matches
from notes_migration.domain.rows import batches_of
from notes_migration.domain.transform import (
    Decision,
    crm_users,
    decide,
)
from notes_migration.run.start import halt_job, load_job
from notes_migration.stores import cdp_store, crm_source, job_store, metrics

log = logging.getLogger(__name__)


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


NOTE_OUTCOMES = [o.value for o in Outcome]


_LEGACY = {"_id": 0, "legacy_crm_note_id": 1}


def page_contacts(db: Database, job_id: str, cfg: RunConfig, rows, saved: dict[int, str] | None):
    """The run's person → contact answers for this page's persons only (memory flat in CID size)."""
    persons = {r.crm_person_id for r in rows}
    if saved is not None:
        return saved_matches(saved)
    return resolve_contacts(persons, cdp_store.find_contacts(db, cfg.company_sso_id, persons))


def _log_entry(job_id: str, cid: int, page_no: int, note_id: int, outcome: Outcome, reason: Reason, details: str):
    return {
        "_id": f"{job_id}:{note_id}:{reason.value}",
        "job_id": job_id,
        "job_page": job_store.page_key(job_id, page_no),
        "cid": cid,
        "legacy_crm_note_id": note_id,
        "outcome": outcome.value,
        "reason_code": reason.value,
        "details": details,
        "created_at": utc_now(),
    }


def _failure_event(job_id: str, cid: int, d: Decision) -> dict:
    return event(
        Event.NOTE_FAILED,
        job_id=job_id,
        cid=cid,
        subject=d.note_id,
        legacy_crm_note_id=d.note_id,
        reason_code=d.failure.value if d.failure else None,
        details=d.details,
    )


def _counts(decisions: list[Decision]) -> tuple[dict[str, int], dict[str, int]]:
    failed: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for d in decisions:
        if d.failure:
            failed[d.failure.value] = failed.get(d.failure.value, 0) + 1
        elif d.skip:
            skipped[d.skip.value] = skipped.get(d.skip.value, 0) + 1
    return failed, skipped


def _page_doc(job_id: str, cfg: RunConfig, page: dict, rows: int, decisions: list[Decision], **fields: Any) -> dict:
    failed_by, skipped_by = _counts(decisions)
    failed, skipped = sum(failed_by.values()), sum(skipped_by.values())
    return {
        "_id": f"{job_id}:{page['page_no']}",
        "job_id": job_id,
        "cid": cfg.cid,
        "page_no": page["page_no"],
        "lo_id": page["lo_id"],
        "hi_id": page["hi_id"],
        "rows": rows,
        "attempted": rows - skipped,
        "migrated": 0,
        "already_migrated": 0,
        "skipped": skipped,
        "failed": failed,
        "failed_by_reason": failed_by,
        "skipped_by_reason": skipped_by,
        **fields,
    }


def halt_decision(others: list[dict], mine: dict, job: dict, cfg: RunConfig) -> Totals | None:
    """The totals that make this page halt, or None: the recorded results of every other page of the job
    (final or provisional) plus this page's decided outcomes, judged by accounting.should_halt."""
    totals = sum_pages([*others, mine])
    crossing = should_halt(
        totals,
        batch_size=cfg.batch_size,
        notes_total=job.get("notes_total", 0),
        max_failure_rate=cfg.thresholds.max_failure_rate,
    )
    return totals if crossing else None


def _halted(db: Database, job: dict, cfg: RunConfig, totals: Totals) -> Halted:
    halt_job(
        db,
        job,
        Reason.FAILURE_RATE_EXCEEDED,
        failure_rate=round(totals.failure_rate, 6),
        failed=totals.failed,
        attempted=totals.attempted,
    )
    return Halted(
        Reason.FAILURE_RATE_EXCEEDED,
        f"{totals.failed} of {totals.attempted} decided notes failed ({totals.failure_rate:.2%}) "
        f"> {cfg.thresholds.max_failure_rate:.2%}; remaining pages write nothing",
    )


SUMMARY_COUNTERS = ("rows", "migrated", "already_migrated", "skipped", "failed")


def migrate_page(crm, db: Database, job_id: str, page: dict, writer: cdp_store.MongoNoteWriter | None = None) -> dict:
    """One task page: its batches one after another, each decided, re-checked and accounted on its own.

    A halt (or a CRM failure) at one batch ends the task there: the batches after it are left as every
    page after a halt is. A task page run again (an Airflow retry) resumes at its first batch that is not
    done, so a retry neither re-reads what it finished nor recounts those notes as already migrated."""
    batches = batches_of(page)
    if len(batches) == 1:
        return migrate_batch(crm, db, job_id, batches[0], writer)
    done = job_store.done_page_nos(db, job_id)
    known: dict[str, Any] = {}  # the run's person map and the company's users: read once for all the batches
    summary = {"page_no": page["page_no"], **dict.fromkeys(SUMMARY_COUNTERS, 0), "batches": len(batches)}
    resumed = 0
    for batch in batches:
        if batch["page_no"] in done:
            resumed += 1
            continue
        one = migrate_batch(crm, db, job_id, batch, writer, known)
        for k in SUMMARY_COUNTERS:
            summary[k] += one[k]
    if resumed:
        log.info(
            "task page %s: %d of %d batches were done by an earlier attempt", page["page_no"], resumed, len(batches)
        )
    return {**summary, "batches_resumed": resumed}


def migrate_batch(
    crm,
    db: Database,
    job_id: str,
    page: dict,
    writer: cdp_store.MongoNoteWriter | None = None,
    known: dict[str, Any] | None = None,
) -> dict:
    """Read → resolve → normalise → decide every note → publish → re-check halt → insert → account.

    `known` carries what the batches of one task page share and read only once (the run's person map
    chunks, the company's users): each read decoded ~0.1 s of documents in FerretDB per batch."""
    started = time.perf_counter()
    page_no = page["page_no"]
    known = {} if known is None else known
    with ThreadPoolExecutor(max_workers=5, thread_name_prefix=f"page{page_no}") as pool:
        chunks_f = None if "chunks" in known else pool.submit(job_store.person_map_chunks, db, job_id)
        job, cfg = load_job(db, job_id)  # the person map is read beside it: it needs only the job id
        if job.get("state") == State.HALTED:
            raise AlreadyHalted(
                Reason(job["halted"]["reason"]), f"job {job_id} halted earlier; page {page_no} writes nothing"
            )
        users_f = None if "users" in known else pool.submit(cdp_store.company_users, db, cfg.company_sso_id)
        rows = crm_source.read_page(crm, cfg.cid, page["lo_id"], page["hi_id"])
        t_read = time.perf_counter()
        persons = {r.crm_person_id for r in rows}
        chunks = known["chunks"] = chunks_f.result() if chunks_f else known["chunks"]
        users = known["users"] = users_f.result() if users_f else known["users"]
        saved = None if chunks is None else job_store.parse_person_map(chunks, persons)
        decisions = transform_page(rows, db, cfg, page_contacts(db, job_id, cfg, rows, saved), users=users)
        t_transform = time.perf_counter()

        # publish the decided outcomes, then re-check the run immediately before inserting
        provisional = _page_doc(job_id, cfg, page, len(rows), decisions, state="deciding", started_at=utc_now())
        previous = job_store.begin_page(db, provisional)
        retry = previous is not None
        attempt = int((previous or {}).get("attempt") or 0) + 1
        cleared: Future | None = None
        if retry:  # an earlier attempt may have left entries: a retried page leaves nothing stale
            cleared = pool.submit(
                job_store.delete_page_note_log, db, job_store.page_key(job_id, page_no), NOTE_OUTCOMES
            )
        fresh_f = pool.submit(job_store.get_job, db, job_id)
        others = [p for p in job_store.page_counters(db, job_id) if p["page_no"] != page_no]
        fresh = fresh_f.result() or job
        checked_at = utc_now()
        if cleared is not None:
            cleared.result()
        crossing = halt_decision(others, provisional, fresh, cfg)
        decided_entries = [
            _log_entry(job_id, cfg.cid, page_no, d.note_id, Outcome.SKIPPED, d.skip, d.details)
            for d in decisions
            if d.skip
        ] + [
            _log_entry(job_id, cfg.cid, page_no, d.note_id, Outcome.FAILED, d.failure, d.details)
            for d in decisions
            if d.failure
        ]
        decided_events = [_failure_event(job_id, cfg.cid, d) for d in decisions if d.failure]
        t_check = time.perf_counter()

        if fresh.get("state") == State.HALTED or crossing is not None:
            # the notes it would have written get their one outcome: skipped, reason = why the run stops
            why = (
                Reason(fresh["halted"]["reason"])
                if fresh.get("state") == State.HALTED
                else Reason.FAILURE_RATE_EXCEEDED
            )
            withheld = [d for d in decisions if d.doc is not None]
            for d in withheld:
                d.doc, d.skip, d.details = (
                    None,
                    why,
                    f"not written: the run halted ({why.value}) before this page inserted",
                )
                decided_entries.append(_log_entry(job_id, cfg.cid, page_no, d.note_id, Outcome.SKIPPED, why, d.details))
            halted_doc = _page_doc(
                job_id,
                cfg,
                page,
                len(rows),
                decisions,
                state="halted",
                withheld_by_halt=len(withheld),
                attempt=attempt,
                checked_at=checked_at,
                finished_at=utc_now(),
            )
            waits = [
                pool.submit(job_store.insert_note_log, db, decided_entries),
                pool.submit(job_store.record_events, db, decided_events),
                pool.submit(job_store.save_page_result, db, halted_doc),
            ]
            for w in waits:
                w.result()
            log.warning(
                "page %s inserts nothing: %d decided failures recorded, %d notes withheld",
                page_no,
                provisional["failed"],
                len(withheld),
            )
            if fresh.get("state") == State.HALTED:
                raise AlreadyHalted(
                    Reason(fresh["halted"]["reason"]), f"job {job_id} halted before page {page_no} inserted"
                )
            assert crossing is not None
            raise _halted(db, fresh, cfg, crossing)

        # what the insert cannot change is written beside it (the decided skips and failures, the heartbeat):
        # FerretDB and PostgreSQL have a core to spare while one insert runs, and the after-insert round trip
        # is then only the page result, its audit and what the insert decided
        early = [
            pool.submit(job_store.insert_note_log, db, decided_entries),
            pool.submit(job_store.record_events, db, decided_events),
            pool.submit(job_store.heartbeat_lock, db, cfg.cid, job["run_id"]),
        ]
        docs = [d.doc for d in decisions if d.doc is not None]
        writer = writer or cdp_store.MongoNoteWriter(db)
        insert_started_at = utc_now()
        result = cdp_store.WriteResult()
        if cfg.dry_run:  # what the insert would do: notes already in CDP would be already_migrated
            ids = [d["legacy_crm_note_id"] for d in docs]
            present = {n["legacy_crm_note_id"] for n in cdp_store.stored_notes(db, cfg.company_sso_id, ids, _LEGACY)}
            result.inserted = {i: None for i in ids if i not in present}
            result.already_migrated = present
        else:
            for i in range(0, len(docs), cfg.batch_size):
                part = writer.write(docs[i : i + cfg.batch_size])
                result.inserted.update(part.inserted)
                result.already_migrated |= part.already_migrated
                result.errors.update(part.errors)
        t_write = time.perf_counter()

        late_entries: list[dict] = []
        late_events: list[dict] = []
        ev: dict[str, Any] = {"job_id": job_id, "cid": cfg.cid}
        for d in decisions:
            if d.skip or d.failure:
                continue
            if d.note_id in result.errors:
                d.failure, d.details = Reason.BATCH_INSERT_FAILED, result.errors[d.note_id]
                late_entries.append(
                    _log_entry(job_id, cfg.cid, page_no, d.note_id, Outcome.FAILED, d.failure, d.details)
                )
                late_events.append(_failure_event(job_id, cfg.cid, d))
                continue
            if d.checkin_dropped:
                late_entries.append(
                    _log_entry(
                        job_id,
                        cfg.cid,
                        page_no,
                        d.note_id,
                        Outcome.MIGRATED,
                        Reason.CHECKIN_DROPPED,
                        "check-in not migrated (D-10)",
                    )
                )
            for warning in d.warnings:  # e.g. HTML_FLATTENED_TO_TEXT: migrated as its text, never lost
                late_entries.append(
                    _log_entry(job_id, cfg.cid, page_no, d.note_id, Outcome.MIGRATED, warning, d.warning_details)
                )
            if d.owner_unresolved and d.doc is not None:
                late_events.append(
                    event(
                        Event.OWNER_NOT_RESOLVED,
                        subject=d.note_id,
                        legacy_crm_note_id=d.note_id,
                        legacy_owner_label=d.doc.get("legacy_owner_label"),
                        **ev,
                    )
                )

        inserted, already = len(result.inserted), len(result.already_migrated)
        final = _page_doc(job_id, cfg, page, len(rows), decisions)
        assert inserted + already + final["failed"] + final["skipped"] == len(rows), "every note has one outcome"
        final.update(
            migrated=inserted,
            already_migrated=already,
            state="done",
            attempt=attempt,
            checkins_dropped=sum(1 for d in decisions if d.checkin_dropped and not d.skip and not d.failure),
            owners_unresolved=sum(1 for d in decisions if d.owner_unresolved),
            mentions_rewritten=sum(d.mentions for d in decisions),
            checked_at=checked_at,
            insert_started_at=insert_started_at,
        )
        audit_ids = dict(result.inserted)
        if retry and result.already_migrated and not cfg.dry_run:
            # an earlier attempt of this page may have inserted these and died before its audit
            for doc in cdp_store.stored_notes(
                db, cfg.company_sso_id, sorted(result.already_migrated), {"_id": 1, "legacy_crm_note_id": 1}
            ):
                audit_ids.setdefault(doc["legacy_crm_note_id"], doc["_id"])
        final["timings_s"] = {
            "read": t_read - started,
            "transform": t_transform - t_read,
            "check": t_check - t_transform,
            "write": t_write - t_check,
            "total": time.perf_counter() - started,
        }
        final["finished_at"] = utc_now()
        late_events.append(
            event(
                Event.BATCH_COMPLETED,
                subject=f"page{page_no}",
                page_no=page_no,
                rows=len(rows),
                migrated=inserted,
                already_migrated=already,
                failed=final["failed"],
                skipped=final["skipped"],
                owners_unresolved=final["owners_unresolved"],
                duration_s=round(final["timings_s"]["total"], 3),
                **ev,
            )
        )
        writes = [
            *early,
            pool.submit(job_store.save_page_result, db, final),
            pool.submit(job_store.record_events, db, late_events),
        ]
        if late_entries:
            writes.append(pool.submit(job_store.insert_note_log, db, late_entries))
        if not cfg.dry_run and audit_ids:  # notes found already migrated are in the audit of the job that inserted them
            first = job_store.page_key(job_id, page_no)  # the relink step reads this one (audit_note_ids)
            audit_id = first if attempt == 1 else f"{first}:{attempt}"
            writes.append(
                pool.submit(
                    job_store.record_audit,
                    db,
                    {
                        "_id": audit_id,
                        "job_id": job_id,
                        "cid": cfg.cid,
                        "company_sso_id": cfg.company_sso_id,
                        "created_at": utc_now(),
                        **job_store.audit_arrays(audit_ids),
                    },
                )
            )
        for w in writes:
            w.result()
    metrics.page_completed(final)

    crossing = halt_decision(others, final, fresh, cfg)  # insert errors count too
    if crossing is not None:
        raise _halted(db, fresh, cfg, crossing)
    return {k: final[k] for k in ("page_no", "rows", "migrated", "already_migrated", "skipped", "failed")}
