"""The migration's own bookkeeping in the CDP database: jobs, locks, pages, the note log
(failed-record queue), the audit map, events, person maps and attachment page results.

All collection names are prefixed `crm_migration_` (config.py) so they never
collide with contact-service's. No counter is ever updated by two writers
(FerretDB's updates are not atomic under concurrency): each page writes its own
result document and totals are summed on read (accounting.py).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from notes_migration.domain import config as C
from notes_migration.domain.accounting import PAGE_COUNTERS
from notes_migration.domain.codes import ERROR_OUTCOMES, RUN_ERROR_OUTCOME, AttachmentOutcome, Outcome
from notes_migration.domain.plain import utc_now
from notes_migration.domain.plain import utc_now as now
from notes_migration.stores import cdp_store
from notes_migration.stores.cdp_store import DUPLICATE_KEY

log = logging.getLogger(__name__)


def ensure_indexes(db: Database) -> dict[str, str]:
    """The CDP idempotency index plus the bookkeeping indexes; says which form the note index took."""
    report = cdp_store.ensure_note_index(db)
    db[C.JOBS].create_index([("cid", ASCENDING), ("created_at", DESCENDING)])
    db[C.PAGES].create_index([("job_id", ASCENDING), ("page_no", ASCENDING)])
    db[C.NOTE_LOG].create_index([("job_id", ASCENDING), ("outcome", ASCENDING)])
    db[C.NOTE_LOG].create_index([("job_page", ASCENDING)])
    db[C.PERSON_MAPS].create_index([("job_id", ASCENDING)])
    db[C.NOTE_LOG].create_index([("created_at", ASCENDING)])
    db[C.EVENTS].create_index([("job_id", ASCENDING), ("at", ASCENDING)])
    db[C.AUDIT].create_index([("cid", ASCENDING)])
    db[C.ATTACHMENT_PAGES].create_index([("job_id", ASCENDING), ("page_no", ASCENDING)])
    return report


# --------------------------------------------------------------------------- jobs


def create_job(db: Database, job: dict) -> None:
    """Idempotent on the deterministic job id (a retried precondition task re-writes the same job)."""
    db[C.JOBS].replace_one({"_id": job["_id"]}, job, upsert=True)


def insert_new_job(db: Database, job: dict) -> None:
    """A job record that must not exist yet (DuplicateKeyError when it does)."""
    db[C.JOBS].insert_one(job)


def get_job(db: Database, job_id: str) -> dict | None:
    return db[C.JOBS].find_one({"_id": job_id})


def update_job(db: Database, job_id: str, **fields: Any) -> None:
    db[C.JOBS].update_one({"_id": job_id}, {"$set": {**fields, "updated_at": now()}})


def latest_job(db: Database, cid: int, *, include_dry_runs: bool = False) -> dict | None:
    query: dict[str, Any] = {"cid": cid}
    if not include_dry_runs:
        query["config.dry_run"] = False
    return db[C.JOBS].find_one(query, sort=[("created_at", DESCENDING), ("_id", DESCENDING)])


def latest_dry_run(db: Database, cid: int) -> dict | None:
    """The CID's latest dry-run job (its report is shown apart from the CID's real status)."""
    query = {"cid": cid, "config.dry_run": True}
    return db[C.JOBS].find_one(query, sort=[("created_at", DESCENDING), ("_id", DESCENDING)])


def jobs_overview(db: Database) -> list[dict]:
    """The latest real job of every CID that has one (the fleet view)."""
    latest: dict[int, dict] = {}
    for job in db[C.JOBS].find({"config.dry_run": False}).sort([("created_at", DESCENDING)]):
        latest.setdefault(job["cid"], job)
    return sorted(latest.values(), key=lambda j: j["cid"])


def count_jobs(db: Database, cid: int) -> int:
    """How many job records a CID has (the trigger endpoint's tests prove a refusal wrote none)."""
    return db[C.JOBS].count_documents({"cid": cid})


# --------------------------------------------------------------------------- locks


class LockHeld(RuntimeError):
    def __init__(self, holder: dict):
        super().__init__(f"CID {holder['_id']} is locked by job {holder.get('job_id')} (run {holder.get('run_id')})")
        self.holder = holder


def acquire_lock(db: Database, cid: int, *, job_id: str, run_id: str, lease_seconds: int) -> dict:
    """Atomic per-CID lock: the unique `_id` makes exactly one insert win.

    The same run may re-acquire (a retried task). A lock whose heartbeat is older
    than the lease belongs to a dead run and is taken over (delete + insert, so
    two rescuers still cannot both win)."""
    locks = db[C.LOCKS]
    for _ in range(2):
        stamp = now()
        try:
            lock = {"_id": cid, "job_id": job_id, "run_id": run_id, "acquired_at": stamp, "heartbeat_at": stamp}
            locks.insert_one(lock)
            return lock
        except DuplicateKeyError:
            holder = locks.find_one({"_id": cid})
            if holder is None:
                continue  # released between our insert and read: try again
            if holder.get("run_id") == run_id:
                return holder
            if not lock_is_live(holder, lease_seconds, at=stamp):
                beat = holder.get("heartbeat_at") or holder.get("acquired_at")
                log.warning(
                    "taking over stale lock of CID %s held by %s (last heartbeat %s)", cid, holder.get("run_id"), beat
                )
                locks.delete_one(
                    {"_id": cid, "run_id": holder.get("run_id"), "heartbeat_at": holder.get("heartbeat_at")}
                )
                continue
            raise LockHeld(holder) from None
    raise LockHeld(locks.find_one({"_id": cid}) or {"_id": cid})


def lock_is_live(lock: Mapping[str, Any] | None, lease_seconds: int, at: dt.datetime | None = None) -> bool:
    """The one stale-lock rule: a lock refreshed within its lease belongs to a live run; an older
    one belongs to a dead run and is taken over by the next run (or released by housekeeping)."""
    if not lock:
        return False
    beat = lock.get("heartbeat_at") or lock.get("acquired_at")
    if beat is None:
        return True
    if beat.tzinfo is None:
        beat = beat.replace(tzinfo=dt.UTC)
    return ((at or now()) - beat).total_seconds() <= lease_seconds


def rollback_record(db: Database, rollback_id: str | None) -> dict | None:
    return db[C.ROLLBACKS].find_one({"_id": rollback_id}) if rollback_id else None


def holds_lock(db: Database, cid: int, holder: str) -> bool:
    """Fencing: does `holder` (a run id, or `rollback:…` / `retry:…`) still hold the CID's lock? Every write path
    asks immediately before it writes; a writer whose lock was released (cancel, teardown, Ops) or taken over
    writes nothing more."""
    lock = db[C.LOCKS].find_one({"_id": cid}, {"run_id": 1})
    return lock is not None and lock.get("run_id") == holder


def heartbeat_lock(db: Database, cid: int, run_id: str) -> None:
    db[C.LOCKS].update_one({"_id": cid, "run_id": run_id}, {"$set": {"heartbeat_at": now()}})


def release_lock(db: Database, cid: int, run_id: str | None = None) -> bool:
    """Release the CID's lock, only if this run holds it (None: Ops' forced release)."""
    query: dict[str, Any] = {"_id": cid}
    if run_id is not None:
        query["run_id"] = run_id
    return db[C.LOCKS].delete_one(query).deleted_count == 1


def get_lock(db: Database, cid: int) -> dict | None:
    return db[C.LOCKS].find_one({"_id": cid})


# --------------------------------------------------------------------------- person maps (the coverage step's answers)


_PERSON_MAP_CHUNK = 5000


def save_person_map(db: Database, job_id: str, mapping: Mapping[int, str]) -> None:
    """A run's person → contact answers, as compact `person=contact;…` strings of ≤ 5,000 entries:
    FerretDB decodes one long string much faster than a document with thousands of keys."""
    db[C.PERSON_MAPS].delete_many({"job_id": job_id})
    items = sorted(mapping.items())
    chunks = [items[i : i + _PERSON_MAP_CHUNK] for i in range(0, len(items), _PERSON_MAP_CHUNK)] or [[]]
    db[C.PERSON_MAPS].insert_many(
        [
            {"_id": f"{job_id}:{n}", "job_id": job_id, "persons": ";".join(f"{p}={c}" for p, c in chunk)}
            for n, chunk in enumerate(chunks)
        ]
    )


def person_map_chunks(db: Database, job_id: str) -> list[str] | None:
    """The raw `person=contact;…` strings of a run's map (None when the run saved none): a page parses
    only its own persons out of them (parse_person_map), so its memory does not grow with the CID."""
    chunks = [doc["persons"] for doc in db[C.PERSON_MAPS].find({"job_id": job_id}, {"persons": 1})]
    return chunks or None


def parse_person_map(chunks: Iterable[str], persons: Iterable[int]) -> dict[int, str]:
    """{person: contact} for the wanted persons only (string keys compared, no int per entry)."""
    wanted = {str(p) for p in persons}
    out: dict[int, str] = {}
    for chunk in chunks:
        for pair in chunk.split(";"):
            person, _, contact = pair.partition("=")
            if person in wanted:
                out[int(person)] = contact
    return out


def load_person_map(db: Database, job_id: str) -> dict[int, str] | None:
    """None when the run saved no map (then the caller resolves by itself)."""
    out: dict[int, str] | None = None
    for doc in db[C.PERSON_MAPS].find({"job_id": job_id}):
        out = out or {}
        for pair in filter(None, doc["persons"].split(";")):
            person, _, contact = pair.partition("=")
            out[int(person)] = contact
    return out


# --------------------------------------------------------------------------- per-page bookkeeping


def save_page_result(db: Database, result: dict) -> None:
    """One document per (job, page), replaced whole: a retried page never double-counts."""
    db[C.PAGES].replace_one({"_id": f"{result['job_id']}:{result['page_no']}"}, result, upsert=True)


def begin_page(db: Database, provisional: dict) -> dict | None:
    """Publish a page attempt's decided outcomes (its provisional result) and return what an earlier
    attempt of the same page had recorded (None on a first attempt): one round trip for both."""
    return db[C.PAGES].find_one_and_replace({"_id": provisional["_id"]}, provisional, upsert=True)  # FerretDB v1:
    # no projection in findAndModify (code 238)


def page_counters(db: Database, job_id: str) -> list[dict]:
    """Only the counters of a job's page results (the halt re-check before every insert reads these)."""
    projection = {"_id": 0, "page_no": 1, **dict.fromkeys(PAGE_COUNTERS, 1)}
    return list(db[C.PAGES].find({"job_id": job_id}, projection))


def page_result(db: Database, job_id: str, page_no: int) -> dict | None:
    return db[C.PAGES].find_one({"_id": page_key(job_id, page_no)})


def done_page_nos(db: Database, job_id: str) -> set[int]:
    """The pages of a job whose final result is recorded (a retried task page skips them)."""
    return {int(p["page_no"]) for p in db[C.PAGES].find({"job_id": job_id, "state": "done"}, {"_id": 0, "page_no": 1})}


def page_results(db: Database, job_id: str) -> list[dict]:
    return list(db[C.PAGES].find({"job_id": job_id}).sort("page_no", ASCENDING))


def _insert_all(collection, docs: list[dict]) -> None:
    """Unordered insert of documents with deterministic ids; an id already there (a retried task) is kept."""
    if not docs:
        return
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
        if others:
            raise


def replace_note_log(db: Database, job_page: str, entries: list[dict], outcomes: Iterable[str]) -> None:
    """The failed-record queue and skip log of one page of a job, replaced: a retried page that now
    succeeds leaves no stale failure behind. Entries of other outcomes (notes vs files) stay."""
    db[C.NOTE_LOG].delete_many({"job_page": job_page, "outcome": {"$in": list(outcomes)}})
    _insert_all(db[C.NOTE_LOG], entries)


def delete_page_note_log(db: Database, job_page: str, outcomes: Iterable[str]) -> int:
    """The note-level entries an earlier attempt of a page left (only called when there was one)."""
    return db[C.NOTE_LOG].delete_many({"job_page": job_page, "outcome": {"$in": list(outcomes)}}).deleted_count


def insert_note_log(db: Database, entries: list[dict]) -> None:
    """Reason-coded entries with deterministic ids: a re-inserted one is kept, never duplicated."""
    _insert_all(db[C.NOTE_LOG], entries)


def note_log(db: Database, job_id: str, outcome: str | Iterable[str] | None = None, limit: int = 0) -> list[dict]:
    """A job's reason-coded note-log entries (all, one outcome, or any of several), by legacy note id."""
    query: dict[str, Any] = {"job_id": job_id}
    if isinstance(outcome, str):
        query["outcome"] = outcome
    elif outcome is not None:
        query["outcome"] = {"$in": list(outcome)}
    return list(db[C.NOTE_LOG].find(query, {"_id": 0}).sort("legacy_crm_note_id", ASCENDING).limit(limit))


def page_key(job_id: str, page_no: int) -> str:
    """One string naming a page of a job: FerretDB pushes string equality down to its storage."""
    return f"{job_id}:{page_no}"


def run_error_key(job_id: str, reason: str) -> str:
    """The `_id` and `job_page` of a run-level entry: one per (job, reason), replaced when it recurs."""
    return f"{job_id}:run:{reason}"


def note_log_entry(
    job_id: str,
    cid: int,
    job_page: str,
    note_id: int | None,
    outcome: str,
    reason: str | None,
    details: str | None,
    *,
    entry_id: str | None = None,
    created_at: dt.datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The one shape of a note-log entry (failed-record queue, skips, warnings, file records, run errors).

    Its `_id` is deterministic, `{job_id}:{note_id}:{reason}` unless `entry_id` names it otherwise (a file's
    record, a run error), so a re-inserted entry is kept, never duplicated; `job_page` is the key its page's
    entries are replaced by. `extra` fields (a file's description) come after `details`."""
    return {
        "_id": entry_id if entry_id is not None else f"{job_id}:{note_id}:{reason}",
        "job_id": job_id,
        "job_page": job_page,
        "cid": cid,
        "legacy_crm_note_id": note_id,
        "outcome": str(outcome),
        "reason_code": None if reason is None else str(reason),
        "details": details,
        **extra,
        "created_at": created_at if created_at is not None else utc_now(),
    }


def page_flagged_note_ids(db: Database, job_id: str, page_no: int) -> set[int]:
    """The notes of one page of a job that ended failed or skipped (a dry run's relink plan leaves them out)."""
    query = {"job_page": page_key(job_id, page_no), "outcome": {"$in": [Outcome.FAILED.value, Outcome.SKIPPED.value]}}
    return {int(e["legacy_crm_note_id"]) for e in db[C.NOTE_LOG].find(query, {"legacy_crm_note_id": 1})}


def audit_arrays(mapping: Mapping[int, Any]) -> dict[str, list]:
    """Parallel arrays (FerretDB v1 stores no nested arrays): legacy ids and their CDP note ids."""
    pairs = sorted(mapping.items())
    return {"legacy_crm_note_ids": [p[0] for p in pairs], "cdp_note_ids": [p[1] for p in pairs]}


def audit_record(audit_id: str, job_id: str, cid: int, company_sso_id: str, mapping: Mapping[int, Any]) -> dict:
    """The audit document of the notes one page (or one failed-record retry) of a job inserted."""
    return {
        "_id": audit_id,
        "job_id": job_id,
        "cid": cid,
        "company_sso_id": company_sso_id,
        "created_at": utc_now(),
        **audit_arrays(mapping),
    }


def record_audit(db: Database, page_audit: dict) -> None:
    """legacy_crm_note_id → CDP note id of one page of one job, as one document replaced whole.

    Inserted first (its id is new but for a retry that reuses it): FerretDB v1 runs a filtered write as a
    scan of the whole collection, so an upsert costs several times what an insert does."""
    try:
        db[C.AUDIT].insert_one(page_audit)
    except DuplicateKeyError:
        db[C.AUDIT].replace_one({"_id": page_audit["_id"]}, page_audit, upsert=True)


def audit_note_ids(db: Database, audit_id: str) -> set[int] | None:
    """The legacy ids one audit record maps (a page's first attempt: `{job_id}:{page_no}`); None when there
    is no such record or its notes were rolled back."""
    doc = db[C.AUDIT].find_one({"_id": audit_id}, {"_id": 0, "legacy_crm_note_ids": 1, "rolled_back_at": 1})
    if doc is None or doc.get("rolled_back_at"):
        return None
    return {int(i) for i in doc.get("legacy_crm_note_ids") or []}


def audit_entries(db: Database, cid: int) -> dict[int, Any]:
    """The audit map of a CID over all its jobs: legacy id → CDP note id."""
    out: dict[int, Any] = {}
    for page in db[C.AUDIT].find({"cid": cid}).sort("created_at", ASCENDING):
        for legacy, note_id in zip(page["legacy_crm_note_ids"], page["cdp_note_ids"], strict=True):
            out.setdefault(int(legacy), note_id)
    return out


def record_events(db: Database, events: list[dict]) -> None:
    _insert_all(db[C.EVENTS], events)


def events(db: Database, job_id: str, limit: int = 500) -> list[dict]:
    return list(db[C.EVENTS].find({"job_id": job_id}, {"_id": 0}).sort("at", ASCENDING).limit(limit))


def counts_by_outcome(db: Database, job_id: str) -> dict[str, dict[str, int]]:
    """{outcome: {reason_code: n}} over a job's note log, counted on the server."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"job_id": job_id}},
        {"$group": {"_id": {"o": "$outcome", "r": "$reason_code"}, "n": {"$sum": 1}}},
    ]
    out: dict[str, dict[str, int]] = {}
    for row in db[C.NOTE_LOG].aggregate(pipeline):
        out.setdefault(row["_id"]["o"], {})[row["_id"]["r"]] = row["n"]
    return out


# What the status shows of the note log: every error outcome, by reason, and the skipped notes by reason.
STATUS_OUTCOMES = (*ERROR_OUTCOMES, Outcome.SKIPPED.value)


def status_counts(db: Database, job_id: str, pages: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """counts_by_outcome for STATUS_OUTCOMES, without decoding the job's whole note log on every poll.

    FerretDB v1 decodes each matching entry, so counting the log costs seconds of the server per status
    call at a large CID (every activity left out is logged skipped). The notes' failed and skipped counts come from the page results, which record them by reason (the
    conservation check after every test run holds them equal to the log); run errors and failed files,
    few by the failure threshold, are counted from the log, one equality query each."""
    failed: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for page in pages:
        failed.update(page.get("failed_by_reason") or {})
        skipped.update(page.get("skipped_by_reason") or {})
    out = {Outcome.FAILED.value: dict(failed), Outcome.SKIPPED.value: dict(skipped)}
    for outcome in (RUN_ERROR_OUTCOME, AttachmentOutcome.FAILED.value):
        found = Counter(
            e["reason_code"] for e in db[C.NOTE_LOG].find({"job_id": job_id, "outcome": outcome}, {"reason_code": 1})
        )
        out[outcome] = dict(found)
    return {outcome: by for outcome, by in out.items() if by}


# --------------------------------------------------------------------------- ops surface (plugin API and UI)


def pages_of_jobs(db: Database, job_ids: list[str]) -> dict[str, list[dict]]:
    """{job_id: its page results' counters} for many jobs in one query (the fleet table; summed by
    accounting.sum_pages, not in a `$group`: FerretDB v1 computes only a `$group`'s first accumulator)."""
    if not job_ids:
        return {}
    projection = {"_id": 0, "job_id": 1, **dict.fromkeys(PAGE_COUNTERS, 1)}
    out: dict[str, list[dict]] = {}
    for page in db[C.PAGES].find({"job_id": {"$in": list(job_ids)}}, projection):
        out.setdefault(page["job_id"], []).append(page)
    return out


def run_events(db: Database, job_id: str, names: Iterable[str], limit: int = 200) -> list[dict]:
    """The job's run-level events (started, batches, halt, completion), newest first."""
    query = {"job_id": job_id, "event": {"$in": list(names)}}
    return list(db[C.EVENTS].find(query, {"_id": 0}).sort("at", DESCENDING).limit(limit))


def event_counts(db: Database, job_id: str) -> dict[str, int]:
    """{event name: n} of a job, counted on the server (note-level events can be thousands)."""
    pipeline: list[dict[str, Any]] = [{"$match": {"job_id": job_id}}, {"$group": {"_id": "$event", "n": {"$sum": 1}}}]
    return {row["_id"]: row["n"] for row in db[C.EVENTS].aggregate(pipeline)}


# --------------------------------------------------------------------------- attachment pages


_ATTACHMENT_OUTCOMES = [o.value for o in AttachmentOutcome]


def replace_attachment_logs(db: Database, entries: list[dict], *, clear_pages: Iterable[str] = ()) -> None:
    """The per-file records of some pages of a job: those of `clear_pages` deleted first (note-level
    records untouched), then `entries` inserted in one command.

    Deleted by `job_page` (string equality, which FerretDB v1 pushes down to PostgreSQL) and outcome:
    a `legacy_crm_note_id $in` filter is not pushed down, so it would decode every note-log entry of
    the job for every page."""
    for job_page in clear_pages:
        db[C.NOTE_LOG].delete_many({"job_page": job_page, "outcome": {"$in": _ATTACHMENT_OUTCOMES}})
    _insert_all(db[C.NOTE_LOG], entries)


def save_attachment_page(db: Database, result: dict) -> None:
    """One document per (job, page) in its own collection, replaced whole (no shared counters)."""
    db[C.ATTACHMENT_PAGES].replace_one({"_id": result["_id"]}, result, upsert=True)


def attachment_page_results(db: Database, job_id: str) -> list[dict]:
    return list(db[C.ATTACHMENT_PAGES].find({"job_id": job_id}).sort("page_no", ASCENDING))


# --------------------------------------------------------------------------- failed-record queue retention


NOTE_LOG_PURGE = "note_log_purge"  # the HOUSEKEEPING document of the failed-record queue's purge
FALLBACK_AFTER = dt.timedelta(days=2)  # a run purges the queue itself when the daily purge has not run for this long


def purge_note_log(db: Database, retention_days: int, *, now: dt.datetime | None = None) -> int:
    """The 30-day retention of the failed-record queue (FerretDB has no TTL index, so we delete), recorded."""
    at = now or utc_now()
    removed = db[C.NOTE_LOG].delete_many({"created_at": {"$lt": at - dt.timedelta(days=retention_days)}}).deleted_count
    db[C.HOUSEKEEPING].replace_one({"_id": NOTE_LOG_PURGE}, {"at": at, "removed": removed}, upsert=True)
    return removed


def purge_note_log_if_overdue(db: Database, retention_days: int, *, now: dt.datetime | None = None) -> int | None:
    """The run start's fallback while the housekeeping DAG is paused: purge only if the last purge is older
    than FALLBACK_AFTER (the delete scans the whole queue on FerretDB v1, too much to pay at every run);
    None when it was not due."""
    at = now or utc_now()
    last = db[C.HOUSEKEEPING].find_one({"_id": NOTE_LOG_PURGE}) or {}
    stamp = last.get("at")
    if stamp is not None and stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    if stamp is not None and at - stamp < FALLBACK_AFTER:
        return None
    return purge_note_log(db, retention_days, now=at)


# --------------------------------------------------------------------------- sign-off (ops/signoff.py)


def first_notes_by_reason(db: Database, job_id: str, per_reason: int = 2) -> list[dict]:
    """For each (outcome, reason code) of the job's note log: its count and the lowest note ids carrying it
    (one indexed query per pair; run errors, which name no note, are left out)."""
    out = []
    for outcome, by_reason in counts_by_outcome(db, job_id).items():
        if outcome == RUN_ERROR_OUTCOME:
            continue
        for reason, n in sorted(by_reason.items(), key=lambda kv: str(kv[0])):
            query = {"job_id": job_id, "outcome": outcome, "reason_code": reason, "legacy_crm_note_id": {"$ne": None}}
            ids = [
                int(e["legacy_crm_note_id"])
                for e in db[C.NOTE_LOG]
                .find(query, {"legacy_crm_note_id": 1})
                .sort("legacy_crm_note_id", ASCENDING)
                .limit(per_reason)
            ]
            out.append({"outcome": outcome, "reason_code": reason, "count": n, "note_ids": ids})
    return out


def note_log_of_notes(db: Database, job_id: str, note_ids: Iterable[int]) -> list[dict]:
    """The job's note-log entries of these notes (a sample's: a few dozen)."""
    query = {"job_id": job_id, "legacy_crm_note_id": {"$in": sorted({int(i) for i in note_ids})}}
    return list(db[C.NOTE_LOG].find(query, {"_id": 0}))


def event_subjects(db: Database, job_id: str, name: str, limit: int = 3) -> list[dict]:
    """The first events of one name of a job (e.g. the owners not resolved), with their properties."""
    return list(db[C.EVENTS].find({"job_id": job_id, "event": name}, {"_id": 0}).sort("_id", ASCENDING).limit(limit))


def record_signoff(db: Database, job_id: str, record: dict) -> None:
    """A sign-off is stored with the job: the latest as `signoff`, every one in `signoffs` (history)."""
    db[C.JOBS].update_one({"_id": job_id}, {"$set": {"signoff": record}, "$push": {"signoffs": record}})
