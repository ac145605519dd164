"""Step 4 of a run: migrating one task page (migrate_page), batch after batch (plan.py packs them).

A *batch* is the PRD's insert unit (`batch_size` notes, ≤ 1000) and the unit of every page result,
note-log key and audit record below ("page" from here on); a *task page* is what one mapped task
processes: k consecutive batches, one after another (config.TARGET_TASK_PAGES says how k is chosen),
so that a large CID does not pay a task's start-up per batch and no run has more than MAX_TASK_PAGES
mapped tasks, while a small CID still gets one task per batch.

Halting with parallel pages (design: "a page decides its notes' outcomes before it writes"), the
steps of migrate_batch, top-down:

1. decide_batch: the page reads, resolves and normalises, so every note's outcome is decided before any
   write;
2. publish: it publishes those decisions as its *provisional* page result (decided failures and attempted
   notes, nothing migrated yet), replacing whatever an earlier attempt of the same page left;
3. recheck_halt: then, immediately before its insert, it re-reads the run's halt state and every page
   result of the job (other pages' final or provisional results) and judges the failure rate over all of
   them plus its own decided failures (accounting.should_halt);
4. withhold: a page that would cross the threshold (or finds the run halted) records its decided
   failures, reason-coded, inserts nothing, and halts the run;
5. write: otherwise it inserts (insert_notes), its decided skips and failures, their events and the
   lock's heartbeat written beside the insert;
6. account: then it writes its final result, audit, and the note log and events the insert decided (in
   parallel: they do not depend on each other).

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

import datetime as dt
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pymongo.database import Database

from notes_migration.domain.accounting import Totals, should_halt, sum_pages, tally
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
from notes_migration.domain.rows import NoteRow, batches_of
from notes_migration.domain.transform import (
    Decision,
    crm_users,
    decide,
)
from notes_migration.run.start import check_fence, halt_job, load_job
from notes_migration.stores import cdp_api, cdp_store, crm_source, job_store, metrics

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


def failure_event(job_id: str, cid: int, d: Decision, **extra: Any) -> dict:
    """The note_failed event of a failed note (a failed-record retry adds `retry=True`)."""
    return event(
        Event.NOTE_FAILED,
        job_id=job_id,
        cid=cid,
        subject=d.note_id,
        legacy_crm_note_id=d.note_id,
        reason_code=d.failure.value if d.failure else None,
        details=d.details,
        **extra,
    )


def insert_failed(d: Decision, result: cdp_store.WriteResult) -> bool:
    """Whether the insert refused this note's document (after its retry): the note then fails
    BATCH_INSERT_FAILED with the write's error."""
    if d.doc is None or d.note_id not in result.errors:
        return False
    d.failure, d.details = Reason.BATCH_INSERT_FAILED, result.errors[d.note_id]
    return True


CHECKIN_DROPPED_DETAILS = "check-in not migrated (D-10)"


def migrated_records(job_id: str, cid: int, job_page: str, d: Decision) -> tuple[list[dict], list[dict]]:
    """The note log entries and events of a note now in CDP: its dropped check-in and its warnings (e.g.
    HTML_FLATTENED_TO_TEXT: migrated as its text, never lost) as `migrated` entries, an unresolved owner as
    an event. The batch and a failed-record retry record a written note with this one rule."""
    entries = []
    if d.checkin_dropped:
        entries.append(
            job_store.note_log_entry(
                job_id, cid, job_page, d.note_id, Outcome.MIGRATED, Reason.CHECKIN_DROPPED, CHECKIN_DROPPED_DETAILS
            )
        )
    for warning in d.warnings:
        entries.append(
            job_store.note_log_entry(job_id, cid, job_page, d.note_id, Outcome.MIGRATED, warning, d.warning_details)
        )
    events = []
    if d.owner_unresolved and d.doc is not None:
        events.append(
            event(
                Event.OWNER_NOT_RESOLVED,
                job_id=job_id,
                cid=cid,
                subject=d.note_id,
                legacy_crm_note_id=d.note_id,
                legacy_owner_label=d.doc.get("legacy_owner_label"),
            )
        )
    return entries, events


def _page_doc(job_id: str, cfg: RunConfig, page: dict, rows: int, decisions: list[Decision], **fields: Any) -> dict:
    """The page's result with its decided outcomes counted (accounting.tally); nothing migrated yet."""
    doc = {
        "_id": job_store.page_key(job_id, page["page_no"]),
        "job_id": job_id,
        "cid": cfg.cid,
        "page_no": page["page_no"],
        "lo_id": page["lo_id"],
        "hi_id": page["hi_id"],
        "rows": rows,
        "attempted": rows,
        "migrated": 0,
        "already_migrated": 0,
        "skipped": 0,
        "failed": 0,
        "failed_by_reason": {},
        "skipped_by_reason": {},
        **fields,
    }
    for d in decisions:
        if d.failure:
            tally(doc, Outcome.FAILED, d.failure)
        elif d.skip:
            tally(doc, Outcome.SKIPPED, d.skip)
    return doc


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


def migrate_page(crm, db: Database, job_id: str, page: dict, writer: cdp_api.NoteWriter | None = None) -> dict:
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


@dataclass
class _Batch:
    """One batch on its way through migrate_batch: what each step hands to the next."""

    db: Database
    job_id: str
    page: dict
    pool: ThreadPoolExecutor
    job: dict
    cfg: RunConfig
    rows: list[NoteRow]
    decisions: list[Decision]
    marks: dict[str, float]  # time.perf_counter() as each step ended: the page result's timings
    provisional: dict = field(default_factory=dict)
    attempt: int = 1
    retry: bool = False  # an earlier attempt of this page recorded a result
    insert_started_at: dt.datetime | None = None
    own_earlier: set[int] | None = None  # a retry's notes its earlier attempt inserted (_own_earlier)

    @property
    def page_no(self) -> int:
        return self.page["page_no"]

    @property
    def job_page(self) -> str:
        return job_store.page_key(self.job_id, self.page_no)

    def page_doc(self, **fields: Any) -> dict:
        return _page_doc(self.job_id, self.cfg, self.page, len(self.rows), self.decisions, **fields)

    def entry(self, d: Decision, outcome: Outcome, reason: Reason) -> dict:
        return job_store.note_log_entry(self.job_id, self.cfg.cid, self.job_page, d.note_id, outcome, reason, d.details)


@dataclass
class _Check:
    """The run as re-read immediately before the insert, and what it decides for this page."""

    fresh: dict  # the job
    others: list[dict]  # the counters of every other page of the job (final or provisional)
    checked_at: dt.datetime
    crossing: Totals | None  # this page would take the failure rate over the threshold

    @property
    def halted_by(self) -> Reason | None:
        """Why this page must not insert: the run's halt, or the crossing it would cause; None: insert."""
        if self.fresh.get("state") == State.HALTED:
            return Reason(self.fresh["halted"]["reason"])
        return Reason.FAILURE_RATE_EXCEEDED if self.crossing is not None else None


def migrate_batch(
    crm,
    db: Database,
    job_id: str,
    page: dict,
    writer: cdp_api.NoteWriter | None = None,
    known: dict[str, Any] | None = None,
) -> dict:
    """Decide → publish → re-check the halt → write → account (the module docstring says why in this order).

    `known` carries what the batches of one task page share and read only once (the run's person map
    chunks, the company's users)."""
    known = {} if known is None else known
    with ThreadPoolExecutor(max_workers=5, thread_name_prefix=f"page{page['page_no']}") as pool:
        b = decide_batch(crm, db, job_id, page, pool, known)
        cleared = publish(b)
        check = recheck_halt(b, cleared)
        entries, events = decided_records(b)
        check_fence(db, check.fresh)  # immediately before the insert (or the halt's records)
        b.marks["check"] = time.perf_counter()
        if check.halted_by is not None:
            withhold(b, check, entries, events)  # raises: this page inserts nothing
        result, beside = write(b, entries, events, writer)  # raises on a refused S2S token (withheld)
        final = account(b, check, result, beside)
    metrics.page_completed(final)

    crossing = halt_decision(check.others, final, check.fresh, b.cfg)  # insert errors count too
    if crossing is not None:
        raise _halted(db, check.fresh, b.cfg, crossing)
    return {k: final[k] for k in ("page_no", *SUMMARY_COUNTERS)}


def decide_batch(crm, db: Database, job_id: str, page: dict, pool: ThreadPoolExecutor, known: dict) -> _Batch:
    """Read, resolve and normalise: every note's outcome decided before anything is written. The run's person
    map is read beside the job and the company's users beside the CRM read (each once per task page)."""
    started = time.perf_counter()
    chunks_f = None if "chunks" in known else pool.submit(job_store.person_map_chunks, db, job_id)
    job, cfg = load_job(db, job_id)  # the person map is read beside it: it needs only the job id
    if job.get("state") == State.HALTED:
        raise AlreadyHalted(
            Reason(job["halted"]["reason"]), f"job {job_id} halted earlier; page {page['page_no']} writes nothing"
        )
    check_fence(db, job)  # before its first write (the provisional page result)
    users_f = None if "users" in known else pool.submit(cdp_store.company_users, db, cfg.company_sso_id)
    rows = crm_source.read_page(crm, cfg.cid, page["lo_id"], page["hi_id"])
    t_read = time.perf_counter()
    persons = {r.crm_person_id for r in rows}
    chunks = known["chunks"] = chunks_f.result() if chunks_f else known["chunks"]
    users = known["users"] = users_f.result() if users_f else known["users"]
    saved = None if chunks is None else job_store.parse_person_map(chunks, persons)
    decisions = transform_page(rows, db, cfg, page_contacts(db, job_id, cfg, rows, saved), users=users)
    marks = {"started": started, "read": t_read, "transform": time.perf_counter()}
    return _Batch(db, job_id, page, pool, job, cfg, rows, decisions, marks)


def publish(b: _Batch) -> Future | None:
    """The decided outcomes published as the page's provisional result, replacing an earlier attempt's. A
    retried page also clears the note log its earlier attempt left (in the background: the re-check waits
    for it), so it leaves nothing stale."""
    b.provisional = b.page_doc(state="deciding", started_at=utc_now())
    previous = job_store.begin_page(b.db, b.provisional)
    b.retry = previous is not None
    b.attempt = int((previous or {}).get("attempt") or 0) + 1
    if not b.retry:
        return None
    return b.pool.submit(job_store.delete_page_note_log, b.db, b.job_page, NOTE_OUTCOMES)


def recheck_halt(b: _Batch, cleared: Future | None) -> _Check:
    """Immediately before the insert: the run's halt state and every other page's counters re-read (in
    parallel) and judged with this page's decided outcomes (halt_decision)."""
    fresh_f = b.pool.submit(job_store.get_job, b.db, b.job_id)
    others = [p for p in job_store.page_counters(b.db, b.job_id) if p["page_no"] != b.page_no]
    fresh = fresh_f.result() or b.job
    checked_at = utc_now()
    if cleared is not None:
        cleared.result()
    return _Check(fresh, others, checked_at, halt_decision(others, b.provisional, fresh, b.cfg))


def decided_records(b: _Batch) -> tuple[list[dict], list[dict]]:
    """The note log entries (skips, then failures) and events of the outcomes decided before the insert."""
    entries = [b.entry(d, Outcome.SKIPPED, d.skip) for d in b.decisions if d.skip] + [
        b.entry(d, Outcome.FAILED, d.failure) for d in b.decisions if d.failure
    ]
    return entries, [failure_event(b.job_id, b.cfg.cid, d) for d in b.decisions if d.failure]


def withhold(b: _Batch, check: _Check, entries: list[dict], events: list[dict]) -> NoReturn:
    """The run is halted, or this page would halt it: the page records its decided failures, the notes it
    would have written get their one outcome (skipped, the reason being why the run stops), its result is
    recorded `halted`, nothing is inserted, and the halt is raised."""
    why = check.halted_by
    assert why is not None
    withheld = [d for d in b.decisions if d.doc is not None]
    for d in withheld:
        d.doc, d.skip, d.details = None, why, f"not written: the run halted ({why.value}) before this page inserted"
        entries.append(b.entry(d, Outcome.SKIPPED, why))
    halted_doc = b.page_doc(
        state="halted",
        withheld_by_halt=len(withheld),
        attempt=b.attempt,
        checked_at=check.checked_at,
        finished_at=utc_now(),
    )
    _wait(
        [
            b.pool.submit(job_store.insert_note_log, b.db, entries),
            b.pool.submit(job_store.record_events, b.db, events),
            b.pool.submit(job_store.save_page_result, b.db, halted_doc),
        ]
    )
    log.warning(
        "page %s inserts nothing: %d decided failures recorded, %d notes withheld",
        b.page_no,
        b.provisional["failed"],
        len(withheld),
    )
    if check.fresh.get("state") == State.HALTED:
        raise AlreadyHalted(why, f"job {b.job_id} halted before page {b.page_no} inserted")
    assert check.crossing is not None
    raise _halted(b.db, check.fresh, b.cfg, check.crossing)


def write(
    b: _Batch, entries: list[dict], events: list[dict], writer: cdp_api.NoteWriter | None
) -> tuple[cdp_store.WriteResult, list[Future]]:
    """The insert, with what it cannot change written beside it (the decided skips and failures, their
    events, the lock's heartbeat): the database has a core to spare while one insert runs, and the round
    trip after the insert is then only what the insert decided. Returns its result and the side writes.

    The writer is the one the run's snapshot names (cdp_api.note_writer: MongoDB or the CDP notes API). A
    token the API refuses (401/403) writes no note: the batch's notes are withheld and the run halts."""
    beside = [
        b.pool.submit(job_store.insert_note_log, b.db, entries),
        b.pool.submit(job_store.record_events, b.db, events),
        b.pool.submit(job_store.heartbeat_lock, b.db, b.cfg.cid, b.job["run_id"]),
    ]
    b.insert_started_at = utc_now()
    try:
        writer = writer or cdp_api.note_writer(b.db, b.cfg.thresholds)
        result = insert_notes(b, writer)
    except cdp_api.Unauthorized as refused:
        refused_by_service(b, beside, refused)
    b.marks["write"] = time.perf_counter()
    return result, beside


def refused_by_service(b: _Batch, beside: list[Future], refused: cdp_api.Unauthorized) -> NoReturn:
    """The CDP notes API refused the S2S token: the service wrote nothing of the batch. Its notes get their one
    outcome (skipped CDP_API_UNAUTHORIZED, counted as withheld by the halt), its result is recorded `halted`,
    the run halts with that reason and later pages write nothing (PRD §9 #7: a 401/403 is not a note failure)."""
    why = Reason.CDP_API_UNAUTHORIZED
    withheld = [d for d in b.decisions if d.doc is not None]
    entries = []
    for d in withheld:
        d.doc, d.skip, d.details = None, why, f"not written: {refused}"
        entries.append(b.entry(d, Outcome.SKIPPED, why))
    halted_doc = b.page_doc(state="halted", withheld_by_halt=len(withheld), attempt=b.attempt, finished_at=utc_now())
    _wait(
        [
            *beside,
            b.pool.submit(job_store.insert_note_log, b.db, entries),
            b.pool.submit(job_store.save_page_result, b.db, halted_doc),
        ]
    )
    fresh = job_store.get_job(b.db, b.job_id) or b.job
    if fresh.get("state") != State.HALTED:  # a first halt wins
        halt_job(b.db, fresh, why, details=str(refused), page_no=b.page_no)
    log.error("page %s inserts nothing: %s; %d notes withheld", b.page_no, refused, len(withheld))
    raise Halted(why, f"{refused.detail}; the run halts, nothing more is written")


def insert_notes(b: _Batch, writer: cdp_api.NoteWriter) -> cdp_store.WriteResult:
    """The batch's documents, inserted `batch_size` at a time. A dry run inserts nothing and says what the
    insert would do: the notes already in CDP would be already_migrated."""
    docs = [d.doc for d in b.decisions if d.doc is not None]
    result = cdp_store.WriteResult()
    if b.cfg.dry_run:
        ids = [d["legacy_crm_note_id"] for d in docs]
        present = {n["legacy_crm_note_id"] for n in cdp_store.stored_notes(b.db, b.cfg.company_sso_id, ids, _LEGACY)}
        result.inserted = {i: None for i in ids if i not in present}
        result.already_migrated = present
        return result
    for i in range(0, len(docs), b.cfg.batch_size):
        part = writer.write(docs[i : i + b.cfg.batch_size])
        result.inserted.update(part.inserted)
        result.already_migrated |= part.already_migrated
        result.errors.update(part.errors)
    return result


def account(b: _Batch, check: _Check, result: cdp_store.WriteResult, beside: list[Future]) -> dict:
    """After the insert: the page's final result, its audit record, the note log and events the insert
    decided, written in parallel (none depends on another), and the side writes of the insert awaited."""
    entries, events = written_records(b, result)
    final = _final_doc(b, check, result)
    audit_ids = _audit_ids(b, result)
    _stamp_timings(b, final)
    events.append(_completed_event(b, final))
    writes = [
        *beside,
        b.pool.submit(job_store.save_page_result, b.db, final),
        b.pool.submit(job_store.record_events, b.db, events),
    ]
    if entries:
        writes.append(b.pool.submit(job_store.insert_note_log, b.db, entries))
    if not b.cfg.dry_run and audit_ids:  # notes found already migrated are in the audit of the job that inserted them
        first = b.job_page  # the relink step reads this one (audit_note_ids)
        audit_id = first if b.attempt == 1 else f"{first}:{b.attempt}"
        record = job_store.audit_record(audit_id, b.job_id, b.cfg.cid, b.cfg.company_sso_id, audit_ids)
        writes.append(b.pool.submit(job_store.record_audit, b.db, record))
    _wait(writes)
    return final


def written_records(b: _Batch, result: cdp_store.WriteResult) -> tuple[list[dict], list[dict]]:
    """The note log entries and events of what the insert decided: its failures, and the records of the
    notes it wrote or found already there (migrated_records)."""
    entries: list[dict] = []
    events: list[dict] = []
    for d in b.decisions:
        if d.skip or d.failure:
            continue
        if insert_failed(d, result):
            entries.append(b.entry(d, Outcome.FAILED, Reason.BATCH_INSERT_FAILED))
            events.append(failure_event(b.job_id, b.cfg.cid, d))
            continue
        more_entries, more_events = migrated_records(b.job_id, b.cfg.cid, b.job_page, d)
        entries += more_entries
        events += more_events
    return entries, events


def _final_doc(b: _Batch, check: _Check, result: cdp_store.WriteResult) -> dict:
    own = len(_own_earlier(b, result))  # inserted by this job's earlier attempt of the page: migrated by this job
    inserted, already = len(result.inserted) + own, len(result.already_migrated) - own
    final = b.page_doc()
    assert inserted + already + final["failed"] + final["skipped"] == len(b.rows), "every note has one outcome"
    final.update(
        migrated=inserted,
        already_migrated=already,
        state="done",
        attempt=b.attempt,
        checkins_dropped=sum(1 for d in b.decisions if d.checkin_dropped and not d.skip and not d.failure),
        owners_unresolved=sum(1 for d in b.decisions if d.owner_unresolved),
        mentions_rewritten=sum(d.mentions for d in b.decisions),
        checked_at=check.checked_at,
        insert_started_at=b.insert_started_at,
    )
    return final


def _own_earlier(b: _Batch, result: cdp_store.WriteResult) -> set[int]:
    """On a retried page, the notes found already there that this job's earlier attempt of the page inserted:
    those its earlier attempts' audits map, or every one found when no earlier attempt wrote an audit (it died
    between its insert and its audit). Counted migrated and kept in this attempt's audit: the page's counters
    and the audit agree (an earlier job's notes stay already_migrated)."""
    if not b.retry or b.cfg.dry_run or not result.already_migrated:
        return set()
    if b.own_earlier is None:
        ids = [b.job_page] + [f"{b.job_page}:{n}" for n in range(2, b.attempt)]
        audits = [a for a in (job_store.audit_note_ids(b.db, i) for i in ids) if a is not None]
        found = set(result.already_migrated)
        b.own_earlier = found & set().union(*audits) if audits else found
    return b.own_earlier


def _audit_ids(b: _Batch, result: cdp_store.WriteResult) -> dict[int, Any]:
    """{legacy id: CDP note id} of the notes this page's audit maps: those it inserted, and on a retried
    page those its earlier attempt inserted (_own_earlier)."""
    audit_ids = dict(result.inserted)
    own = _own_earlier(b, result)
    if own:
        for doc in cdp_store.stored_notes(b.db, b.cfg.company_sso_id, sorted(own), {"_id": 1, "legacy_crm_note_id": 1}):
            audit_ids.setdefault(doc["legacy_crm_note_id"], doc["_id"])
    return audit_ids


def _stamp_timings(b: _Batch, final: dict) -> None:
    m = b.marks
    final["timings_s"] = {
        "read": m["read"] - m["started"],
        "transform": m["transform"] - m["read"],
        "check": m["check"] - m["transform"],
        "write": m["write"] - m["check"],
        "total": time.perf_counter() - m["started"],
    }
    final["finished_at"] = utc_now()


def _completed_event(b: _Batch, final: dict) -> dict:
    return event(
        Event.BATCH_COMPLETED,
        job_id=b.job_id,
        cid=b.cfg.cid,
        subject=f"page{b.page_no}",
        page_no=b.page_no,
        rows=final["rows"],
        migrated=final["migrated"],
        already_migrated=final["already_migrated"],
        failed=final["failed"],
        skipped=final["skipped"],
        owners_unresolved=final["owners_unresolved"],
        duration_s=round(final["timings_s"]["total"], 3),
    )


def _wait(futures: list[Future]) -> None:
    for f in futures:
        f.result()
