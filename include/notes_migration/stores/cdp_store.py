"""CDP's own collections in MongoDB: contacts, identity users, `contact_notes`, and the writer seam.

The migration's bookkeeping (jobs, locks, pages, note log, audit, events) is in
job_store.py. Uses only the subset FerretDB v1 and MongoDB share: no partial
index is required, no TTL index, no transactions, no bulk update.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import BulkWriteError, OperationFailure

from notes_migration.domain import config as C

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
NOT_IMPLEMENTED = 238  # FerretDB v1: partialFilterExpression, TTL indexes
NOTE_KEY = [("company_sso_id", ASCENDING), ("legacy_crm_note_id", ASCENDING)]

NOTE_KEY_NAME = "uniq_company_legacy_crm_note_id"


# --------------------------------------------------------------------------- indexes


def ensure_note_index(db: Database) -> dict[str, str]:
    """The idempotency index of contact_notes; says which form the server accepted."""
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
    return report


# --------------------------------------------------------------------------- CDP reads


SCAN_ABOVE_PERSONS = 2000  # above this many persons, one pass over the company's contacts beats `$in` chunks


def _crm_data_ids(contact: dict) -> list[Any]:
    data = contact.get("crm_data")
    items = data if isinstance(data, list) else [data]
    return [d.get("id") for d in items if isinstance(d, dict)]


# Documents per reply of a whole-company pass: FerretDB v1 answers a getMore with ~250 notes by default, and
# the 71,210 notes of a 100,000-note CID streamed in 12.8 s that way against 8.7-9.5 s at 5,000-20,000 per
# reply (~4 MB a reply here, within the 16 MiB a reply may hold).
SCAN_BATCH = 10_000


def find_contacts(db: Database, company_sso_id: str, person_ids: Iterable[int], chunk: int = 1000) -> list[dict]:
    """Contacts of the company matching any of the persons by crm_data.id or (crm, source_id).

    For a whole CID (the coverage step, validation) one streamed pass over the company's contacts, matched
    here: FerretDB v1 pushes the company equality down but not `$or`/`$in`, so each `$in` chunk is a full
    scan (measured at 100,000 notes / 25,000 persons: 164 s in chunks vs 4 s in one pass)."""
    ids = sorted(set(person_ids))
    found: list[dict] = []
    projection = {"_id": 1, "crm_data": 1, "source": 1, "source_id": 1, "created_at": 1}
    if len(ids) > SCAN_ABOVE_PERSONS:
        wanted, wanted_str = set(ids), {str(p) for p in ids}
        for contact in db[C.CONTACTS].find({"company_sso_id": company_sso_id}, projection).batch_size(SCAN_BATCH):
            by_source = contact.get("source") == "crm" and contact.get("source_id") in wanted_str
            if by_source or any(i in wanted for i in _crm_data_ids(contact) if isinstance(i, int | float)):
                found.append(contact)
        return found
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


def user_names(db: Database, company_sso_id: str, user_ids: Iterable[str | None]) -> dict[str, str]:
    """{SSO user id: "Full Name <email>"}: how the CDP front end names a note's owner (the sign-off view)."""
    ids = sorted({u for u in user_ids if u})
    if not ids:
        return {}
    found = db[C.LAUNCHPAD_USERS].find(
        {"company_sso_id": company_sso_id, "_id": {"$in": ids}}, {"full_name": 1, "email": 1}
    )
    return {
        str(u["_id"]): " ".join(p for p in (u.get("full_name"), f"<{u['email']}>" if u.get("email") else "") if p)
        for u in found
    }


def migrated_notes(db: Database, company_sso_id: str, projection: dict | None = None):
    """A cursor over every migrated note of the company (one pass, streamed in batches of SCAN_BATCH)."""
    return (
        db[C.CONTACT_NOTES]
        .find({"company_sso_id": company_sso_id, "legacy_crm_note_id": {"$exists": True}}, projection)
        .batch_size(SCAN_BATCH)
    )


# Up to this many ids, one equality query per note (in parallel) beats one `$in`: FerretDB v1 pushes
# `company_sso_id` + `legacy_crm_note_id` equality down to PostgreSQL (one sequential scan there, ~50 ms
# at 82,000 notes) but not `$in`, which decodes every note of the company in FerretDB (2.6 s at a
# 71,000-note company: what made each relink page of a 100,000-note CID cost seconds to tens of seconds).
EQUALITY_LOOKUPS_UP_TO = 32


def stored_notes(
    db: Database, company_sso_id: str, legacy_ids: list[int], projection: dict | None = None
) -> list[dict]:
    """The company's CDP notes among `legacy_ids` (order not guaranteed)."""
    if not legacy_ids:
        return []
    notes = db[C.CONTACT_NOTES]
    ids = sorted(set(legacy_ids))
    if len(ids) <= EQUALITY_LOOKUPS_UP_TO:

        def one(nid: int) -> dict | None:
            return notes.find_one({"company_sso_id": company_sso_id, "legacy_crm_note_id": nid}, projection)

        if len(ids) == 1:
            found = [one(ids[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(4, len(ids)), thread_name_prefix="stored") as pool:
                found = list(pool.map(one, ids))
        return [d for d in found if d is not None]
    query = {"company_sso_id": company_sso_id, "legacy_crm_note_id": {"$in": ids}}
    return list(notes.find(query, projection))


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
        dups: set[int] = set()
        try:
            self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            for err in exc.details.get("writeErrors", []):
                legacy = docs[err["index"]]["legacy_crm_note_id"]
                if err.get("code") == DUPLICATE_KEY:
                    dups.add(legacy)
                else:
                    failed[legacy] = f"{err.get('code')}: {err.get('errmsg', '')[:300]}"
        except Exception as exc:  # connection-level: every doc of the batch is in doubt
            failed = {d["legacy_crm_note_id"]: f"{type(exc).__name__}: {exc}"[:300] for d in docs}
        if dups and not retry:  # the second try of notes in doubt: the first may have landed after all
            dups -= self._own_inserts([d for d in docs if d["legacy_crm_note_id"] in dups])
        result.already_migrated |= dups
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

    def _own_inserts(self, docs: list[dict]) -> set[int]:
        """The legacy ids among `docs` stored under these very `_id`s: inserted by this page's first try
        (its error came after the server had written them), so migrated by it, not `already_migrated`.
        One `_id $in` (FerretDB v1 scans the collection for it): only on this rare path."""
        mine = {d["_id"]: d["legacy_crm_note_id"] for d in docs}
        try:
            return {mine[d["_id"]] for d in self.collection.find({"_id": {"$in": list(mine)}}, {"_id": 1})}
        except Exception as exc:  # noqa: BLE001 - the server went away again: counted as before, already_migrated
            log.warning("could not tell own inserts from earlier ones (%s): counted already_migrated", exc)
            return set()


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


# --------------------------------------------------------------------------- sign-off (ops/signoff.py)


def migrated_note_ids_where(db: Database, company_sso_id: str, condition: dict, limit: int = 3) -> list[int]:
    """Legacy ids of the company's migrated notes matching `condition` (e.g. an attachment kind), lowest first."""
    query = {"company_sso_id": company_sso_id, "legacy_crm_note_id": {"$exists": True}, **condition}
    cursor = db[C.CONTACT_NOTES].find(query, {"legacy_crm_note_id": 1}).sort("legacy_crm_note_id", 1).limit(limit)
    return [int(d["legacy_crm_note_id"]) for d in cursor]


def contact_timeline(db: Database, company_sso_id: str, contact_id: Any, limit: int = 500) -> list[dict]:
    """A contact's notes as an agent sees them: newest `created_at` first (migrated and native notes alike)."""
    query = {"company_sso_id": company_sso_id, "contact_id": contact_id}
    return list(db[C.CONTACT_NOTES].find(query).sort([("created_at", -1), ("_id", -1)]).limit(limit))
