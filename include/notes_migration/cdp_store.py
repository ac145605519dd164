"""Everything the migration reads or writes in CDP MongoDB. All Mongo calls live here.

Uses only the subset FerretDB v1 and MongoDB share: no partial indexes are
required, no TTL index is required, no transactions, and no counter is ever
updated by two writers (FerretDB's updates are not atomic under concurrency):
each page writes its own result document and totals are summed on read.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from notes_migration import config as C
from notes_migration.codes import AttachmentOutcome

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
NOT_IMPLEMENTED = 238  # FerretDB v1: partialFilterExpression, TTL indexes
NOTE_KEY = [("company_sso_id", ASCENDING), ("legacy_crm_note_id", ASCENDING)]
NOTE_KEY_NAME = "uniq_company_legacy_crm_note_id"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- indexes


def ensure_indexes(db: Database) -> dict[str, str]:
    """Create the idempotency index and bookkeeping indexes; say which form the server accepted."""
    notes = db[C.CONTACT_NOTES]
    report = {}
    try:
        notes.create_index(
            NOTE_KEY,
            name=NOTE_KEY_NAME,
            unique=True,
            partialFilterExpression={"legacy_crm_note_id": {"$exists": True}},
        )
        report["contact_notes"] = "partial unique"
    except OperationFailure as exc:
        if exc.code not in (NOT_IMPLEMENTED, 67, 85, 86):  # 67/85/86: options differ from an existing index
            raise
        existing = notes.index_information().get(NOTE_KEY_NAME)
        if existing is None:
            notes.create_index(NOTE_KEY, name=NOTE_KEY_NAME, unique=True)
            log.warning(
                "server refused a partial index (%s); created the plain unique index %s on contact_notes instead",
                exc.code,
                NOTE_KEY_NAME,
            )
        report["contact_notes"] = (
            "partial unique" if existing and existing.get("partialFilterExpression") else "plain unique"
        )
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


# --------------------------------------------------------------------------- CDP reads


def find_contacts(db: Database, company_sso_id: str, person_ids: Iterable[int], chunk: int = 1000) -> list[dict]:
    """Contacts of the company matching any of the persons by crm_data.id or (crm, source_id)."""
    ids = sorted(set(person_ids))
    found: list[dict] = []
    projection = {"_id": 1, "crm_data": 1, "source": 1, "source_id": 1, "created_at": 1}
    for i in range(0, len(ids), chunk):
        part = ids[i : i + chunk]
        query = {
            "company_sso_id": company_sso_id,
            "$or": [
                {"crm_data.id": {"$in": part}},
                {"source": "crm", "source_id": {"$in": [str(p) for p in part]}},
            ],
        }
        found.extend(db[C.CONTACTS].find(query, projection))
    return found


def company_users(db: Database, company_sso_id: str) -> list[dict]:
    return list(db[C.LAUNCHPAD_USERS].find({"company_sso_id": company_sso_id}, {"crm_user_id": 1, "email": 1}))


# --------------------------------------------------------------------------- the writer seam


@dataclass
class WriteResult:
    inserted: dict[int, Any] = field(default_factory=dict)  # legacy id → CDP _id
    already_migrated: set[int] = field(default_factory=set)
    errors: dict[int, str] = field(default_factory=dict)


class MongoNoteWriter:
    """CDP's migrate semantics (PRD §9 #7) over MongoDB: explicit company, legacy id and
    timestamps, unordered batch ≤ 1000, skip on conflict. An HTTP writer for
    `POST /cdp/notes/migrate` can replace this class behind the same `write`."""

    max_batch = 1000

    def __init__(self, db: Database):
        self.collection = db[C.CONTACT_NOTES]

    def write(self, docs: list[dict]) -> WriteResult:
        result = WriteResult()
        for i in range(0, len(docs), self.max_batch):
            self._write_batch(docs[i : i + self.max_batch], result, retry=True)
        return result

    def _write_batch(self, docs: list[dict], result: WriteResult, retry: bool) -> None:
        if not docs:
            return
        for doc in docs:
            if doc.get("legacy_crm_note_id") is None:  # never write a null legacy id
                raise ValueError("refusing to write a contact_notes document without legacy_crm_note_id")
            doc.setdefault("_id", ObjectId())
        failed: dict[int, str] = {}
        try:
            self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            for err in exc.details.get("writeErrors", []):
                legacy = docs[err["index"]]["legacy_crm_note_id"]
                if err.get("code") == DUPLICATE_KEY:
                    result.already_migrated.add(legacy)
                else:
                    failed[legacy] = f"{err.get('code')}: {err.get('errmsg', '')[:300]}"
        except Exception as exc:  # connection-level: every doc of the batch is in doubt
            failed = {d["legacy_crm_note_id"]: f"{type(exc).__name__}: {exc}"[:300] for d in docs}
        for doc in docs:
            legacy = doc["legacy_crm_note_id"]
            if legacy not in failed and legacy not in result.already_migrated:
                result.inserted[legacy] = doc["_id"]
        if not failed:
            return
        if retry:
            log.warning("retrying %d notes once after write errors: %s", len(failed), list(failed.items())[:3])
            again = [d for d in docs if d["legacy_crm_note_id"] in failed]
            for d in again:
                result.inserted.pop(d["legacy_crm_note_id"], None)
            self._write_batch(again, result, retry=False)
        else:
            result.errors.update(failed)


def migrated_notes(db: Database, company_sso_id: str, projection: dict | None = None):
    """A cursor over every migrated note of the company (one pass, streamed)."""
    return db[C.CONTACT_NOTES].find(
        {"company_sso_id": company_sso_id, "legacy_crm_note_id": {"$exists": True}}, projection
    )


_PERSON_MAP_CHUNK = 5000


def save_person_map(db: Database, job_id: str, mapping: Mapping[int, str]) -> None:
    """A run's person → contact answers, as compact `person=contact;…` strings of ≤ 5,000 entries:
    FerretDB decodes one long string ~5× faster than a document with thousands of keys."""
    db[C.PERSON_MAPS].delete_many({"job_id": job_id})
    items = sorted(mapping.items())
    chunks = [items[i : i + _PERSON_MAP_CHUNK] for i in range(0, len(items), _PERSON_MAP_CHUNK)] or [[]]
    db[C.PERSON_MAPS].insert_many(
        [
            {"_id": f"{job_id}:{n}", "job_id": job_id, "persons": ";".join(f"{p}={c}" for p, c in chunk)}
            for n, chunk in enumerate(chunks)
        ]
    )


def load_person_map(db: Database, job_id: str) -> dict[int, str] | None:
    """None when the run saved no map (then the caller resolves by itself)."""
    out: dict[int, str] | None = None
    for doc in db[C.PERSON_MAPS].find({"job_id": job_id}):
        out = out or {}
        for pair in filter(None, doc["persons"].split(";")):
            person, _, contact = pair.partition("=")
            out[int(person)] = contact
    return out


def stored_notes(
    db: Database, company_sso_id: str, legacy_ids: list[int], projection: dict | None = None
) -> list[dict]:
    if not legacy_ids:
        return []
    query = {"company_sso_id": company_sso_id, "legacy_crm_note_id": {"$in": legacy_ids}}
    return list(db[C.CONTACT_NOTES].find(query, projection))


# --------------------------------------------------------------------------- jobs and locks


def create_job(db: Database, job: dict) -> None:
    """Idempotent on the deterministic job id (a retried precondition task re-writes the same job)."""
    db[C.JOBS].replace_one({"_id": job["_id"]}, job, upsert=True)


def get_job(db: Database, job_id: str) -> dict | None:
    return db[C.JOBS].find_one({"_id": job_id})


def update_job(db: Database, job_id: str, **fields: Any) -> None:
    db[C.JOBS].update_one({"_id": job_id}, {"$set": {**fields, "updated_at": now()}})


def latest_job(db: Database, cid: int, *, include_dry_runs: bool = False) -> dict | None:
    query: dict[str, Any] = {"cid": cid}
    if not include_dry_runs:
        query["config.dry_run"] = False
    return db[C.JOBS].find_one(query, sort=[("created_at", DESCENDING), ("_id", DESCENDING)])


def jobs_overview(db: Database) -> list[dict]:
    """The latest real job of every CID that has one (the fleet view)."""
    latest: dict[int, dict] = {}
    for job in db[C.JOBS].find({"config.dry_run": False}).sort([("created_at", DESCENDING)]):
        latest.setdefault(job["cid"], job)
    return sorted(latest.values(), key=lambda j: j["cid"])


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
            beat = holder.get("heartbeat_at") or holder.get("acquired_at")
            if beat and (stamp - beat).total_seconds() > lease_seconds:
                log.warning(
                    "taking over stale lock of CID %s held by %s (last heartbeat %s)", cid, holder.get("run_id"), beat
                )
                locks.delete_one(
                    {"_id": cid, "run_id": holder.get("run_id"), "heartbeat_at": holder.get("heartbeat_at")}
                )
                continue
            raise LockHeld(holder) from None
    raise LockHeld(locks.find_one({"_id": cid}) or {"_id": cid})


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


# --------------------------------------------------------------------------- per-page bookkeeping


def save_page_result(db: Database, result: dict) -> None:
    """One document per (job, page), replaced whole: a retried page never double-counts."""
    db[C.PAGES].replace_one({"_id": f"{result['job_id']}:{result['page_no']}"}, result, upsert=True)


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


def note_log(db: Database, job_id: str, outcome: str | Iterable[str] | None = None, limit: int = 0) -> list[dict]:
    """A job's reason-coded note-log entries (all, one outcome, or any of several), by legacy note id."""
    query: dict[str, Any] = {"job_id": job_id}
    if isinstance(outcome, str):
        query["outcome"] = outcome
    elif outcome is not None:
        query["outcome"] = {"$in": list(outcome)}
    return list(db[C.NOTE_LOG].find(query, {"_id": 0}).sort("legacy_crm_note_id", ASCENDING).limit(limit))


def purge_expired_note_log(db: Database, retention_days: int) -> int:
    """The 30-day retention of the failed-record queue (FerretDB has no TTL index, so we purge)."""
    cutoff = now() - dt.timedelta(days=retention_days)
    return db[C.NOTE_LOG].delete_many({"created_at": {"$lt": cutoff}}).deleted_count


def audit_arrays(mapping: Mapping[int, Any]) -> dict[str, list]:
    """Parallel arrays (FerretDB v1 stores no nested arrays): legacy ids and their CDP note ids."""
    pairs = sorted(mapping.items())
    return {"legacy_crm_note_ids": [p[0] for p in pairs], "cdp_note_ids": [p[1] for p in pairs]}


def record_audit(db: Database, page_audit: dict) -> None:
    """legacy_crm_note_id → CDP note id of one page of one job, as one document replaced whole."""
    db[C.AUDIT].replace_one({"_id": page_audit["_id"]}, page_audit, upsert=True)


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
    pipeline = [
        {"$match": {"job_id": job_id}},
        {"$group": {"_id": {"o": "$outcome", "r": "$reason_code"}, "n": {"$sum": 1}}},
    ]
    out: dict[str, dict[str, int]] = {}
    for row in db[C.NOTE_LOG].aggregate(pipeline):
        out.setdefault(row["_id"]["o"], {})[row["_id"]["r"]] = row["n"]
    return out


def as_plain(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A Mongo document with dates as ISO strings and ids as strings, ready for JSON."""
    if doc is None:
        return None

    def conv(v: Any) -> Any:
        if isinstance(v, dt.datetime):
            return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).isoformat().replace("+00:00", "Z")
        if isinstance(v, Mapping):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        if type(v).__name__ == "ObjectId":
            return str(v)
        return v

    return conv(dict(doc))


# --------------------------------------------------------------------------- ops surface (plugin API and UI)


def page_totals(db: Database, job_ids: list[str]) -> dict[str, dict[str, int]]:
    """{job_id: summed page counters} for many jobs in one query (the fleet table).

    Summed here, not in a `$group`: FerretDB v1 computes only the first accumulator
    of a `$group` stage (the others come back 0)."""
    if not job_ids:
        return {}
    keys = (
        "rows",
        "attempted",
        "migrated",
        "already_migrated",
        "skipped",
        "failed",
        "checkins_dropped",
        "owners_unresolved",
    )
    out: dict[str, dict[str, int]] = {}
    projection = {"_id": 0, "job_id": 1, **dict.fromkeys(keys, 1)}
    for page in db[C.PAGES].find({"job_id": {"$in": list(job_ids)}}, projection):
        sums = out.setdefault(page["job_id"], {"pages_done": 0, **dict.fromkeys(keys, 0)})
        sums["pages_done"] += 1
        for key in keys:
            sums[key] += int(page.get(key) or 0)
    return out


def run_events(db: Database, job_id: str, names: Iterable[str], limit: int = 200) -> list[dict]:
    """The job's run-level events (started, batches, halt, completion), newest first."""
    query = {"job_id": job_id, "event": {"$in": list(names)}}
    return list(db[C.EVENTS].find(query, {"_id": 0}).sort("at", DESCENDING).limit(limit))


def event_counts(db: Database, job_id: str) -> dict[str, int]:
    """{event name: n} of a job, counted on the server (note-level events can be thousands)."""
    pipeline = [{"$match": {"job_id": job_id}}, {"$group": {"_id": "$event", "n": {"$sum": 1}}}]
    return {row["_id"]: row["n"] for row in db[C.EVENTS].aggregate(pipeline)}


def count_jobs(db: Database, cid: int) -> int:
    """How many job records a CID has (the trigger endpoint's tests prove a refusal wrote none)."""
    return db[C.JOBS].count_documents({"cid": cid})


# --------------------------------------------------------------------------- attachment relink (design step 5)


def set_note_attachments(db: Database, updates: list[tuple[Any, list[dict]]]) -> int:
    """One `$set` of the whole `attachments` array per note (by CDP _id): a re-run replaces, never appends.

    `updated_at` is left alone on purpose: it holds the CRM original (D-2).

    One update command per note, never a multi-statement bulk: FerretDB v1's PostgreSQL backend
    holds one pooled connection per statement of an update command until the command ends, so a
    bulk of more statements than its pool (50) waits on itself forever and wedges the server."""
    notes = db[C.CONTACT_NOTES]
    return sum(
        notes.update_one({"_id": note_id}, {"$set": {"attachments": attachments}}).modified_count
        for note_id, attachments in updates
    )


_ATTACHMENT_OUTCOMES = [o.value for o in AttachmentOutcome]


def replace_attachment_log(db: Database, job_id: str, legacy_ids: list[int], entries: list[dict]) -> None:
    """The per-file records of a page's notes for this job, replaced (note-level records untouched)."""
    if legacy_ids:
        db[C.NOTE_LOG].delete_many(
            {
                "job_id": job_id,
                "legacy_crm_note_id": {"$in": list(legacy_ids)},
                "outcome": {"$in": _ATTACHMENT_OUTCOMES},
            }
        )
    _insert_all(db[C.NOTE_LOG], entries)


def save_attachment_page(db: Database, result: dict) -> None:
    """One document per (job, page) in its own collection, replaced whole (no shared counters)."""
    db[C.ATTACHMENT_PAGES].replace_one({"_id": result["_id"]}, result, upsert=True)


def attachment_page_results(db: Database, job_id: str) -> list[dict]:
    return list(db[C.ATTACHMENT_PAGES].find({"job_id": job_id}).sort("page_no", ASCENDING))
