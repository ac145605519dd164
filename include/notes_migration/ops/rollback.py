"""Rolling back one CID: remove exactly the notes its migrations inserted, and the files copied for them.

* What: the CID's audit map (`crm_migration_audit`, legacy id → CDP note id per job page), scoped
  to the company each entry was written for; a note is deleted by its CDP `_id` *and* company *and*
  legacy id, so nothing else can match. Its copied files are the objects under
  `{company_sso_id}/notes/{legacy_crm_note_id}/` in CDP storage.
* Safety: a note changed in CDP after migration is never deleted. The audit map stores no content,
  so "what was written" is re-derived from the CRM source exactly as validation's content check does
  (contact, owner or label, timestamps to the ms, hash of the normalised HTML); any difference, or a
  note that can no longer be derived, refuses the whole rollback (ROLLBACK_REFUSED) and lists them.
* Dry run first (the default everywhere): the same report, nothing written.
* Recorded: one `crm_migration_rollbacks` document (who, when, counts); the audit entries are kept
  and marked `rolled_back_at` / `rollback_id`; the CID's jobs are marked `rolled_back`, so the
  ALREADY_MIGRATED precondition no longer refuses and the CID can be migrated again from scratch.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pymongo.database import Database

from notes_migration.domain import config as C
from notes_migration.domain.attachment_plan import notes_prefix
from notes_migration.domain.codes import Fenced, Reason, Refused
from notes_migration.domain.config import HTTP_WRITER, MONGO_WRITER, RunConfig
from notes_migration.domain.plain import as_plain, utc_now
from notes_migration.stores import crm_source, job_store
from notes_migration.stores import s3_store as s3

log = logging.getLogger(__name__)

_CHUNK = 500


def _audited(db: Database, cid: int) -> tuple[list[dict], dict[tuple[str, int], Any]]:
    """The CID's audit pages not yet rolled back, and {(company, legacy id): CDP note id}."""
    pages = list(db[C.AUDIT].find({"cid": cid, "rolled_back_at": {"$exists": False}}))
    notes: dict[tuple[str, int], Any] = {}
    for page in pages:
        for legacy, note_id in zip(page["legacy_crm_note_ids"], page["cdp_note_ids"], strict=True):
            notes.setdefault((page["company_sso_id"], int(legacy)), note_id)
    return pages, notes


def _changed(crm, db: Database, cid: int, company: str, stored: dict[int, dict]) -> list[dict]:
    """Notes whose CDP document differs from what the migration wrote (re-derived from the CRM source)."""
    from notes_migration.domain.transform import content_mismatches
    from notes_migration.run.batch import transform_page  # the sanitiser: loaded only for a rollback
    from notes_migration.run.coverage import resolve_all_persons

    job = job_store.latest_job(db, cid) or {}
    base = RunConfig.from_dict(job["config"]) if job.get("config") else RunConfig(cid=cid, company_sso_id=company)
    cfg = RunConfig(
        cid=cid, company_sso_id=company, include_activities=True, batch_size=500, thresholds=base.thresholds
    )
    _, contacts = resolve_all_persons(crm, db, cid, company, True)
    changed: list[dict] = []
    seen: set[int] = set()
    for rows in crm_source.iter_pages(crm, cid, 500):
        present = [r for r in rows if r.id in stored]
        for d in transform_page(present, db, cfg, contacts):
            seen.add(d.note_id)
            if d.doc is None:
                changed.append({"legacy_crm_note_id": d.note_id, "fields": ["cannot re-derive from the CRM"]})
                continue
            problems = content_mismatches(d.doc, stored[d.note_id])
            if problems:
                changed.append({"legacy_crm_note_id": d.note_id, "fields": problems})
    for legacy in sorted(set(stored) - seen):  # the CRM no longer has the source: cannot prove it unchanged
        changed.append({"legacy_crm_note_id": legacy, "fields": ["source note gone from the CRM"]})
    return sorted(changed, key=lambda c: c["legacy_crm_note_id"])


def rollback_cid(
    crm,
    db: Database,
    cid: int,
    *,
    requested_by: str,
    dry_run: bool = True,
    target: s3.Bucket | None = None,
    lease_seconds: int = 3 * 3600,
    writer: str = MONGO_WRITER,
) -> dict[str, Any]:
    """Plan (dry run) or perform the rollback of a CID; raises Refused (nothing written) when it must not run.

    On the HTTP write path (the settings' `writer`, or any job whose notes it would delete wrote through the CDP
    notes API) it refuses ROLLBACK_REFUSED: the contract has no delete endpoint, and deleting contact_notes in
    MongoDB would bypass the service (PRD §16b).

    An execute holds the CID's lock from its first read to its last write (holder `rollback:<id>`), so a run
    triggered meanwhile is refused JOB_ALREADY_RUNNING, a second rollback likewise, and each delete is fenced."""
    refuse_on_http_path(db, cid, writer)
    if dry_run:
        if job_store.lock_is_live(job_store.get_lock(db, cid), lease_seconds):
            raise Refused(Reason.JOB_ALREADY_RUNNING, f"CID {cid} has a run in progress: cancel it first")
        return _plan(crm, db, cid, dry_run=True)[0]
    rollback_id = str(uuid.uuid4())
    holder = f"rollback:{rollback_id}"
    try:
        job_store.acquire_lock(db, cid, job_id=holder, run_id=holder, lease_seconds=lease_seconds)
    except job_store.LockHeld as held:
        raise Refused(Reason.JOB_ALREADY_RUNNING, f"CID {cid} is locked ({held}): cancel or wait first") from None
    try:
        report, pages, by_company, stored_by_company = _plan(crm, db, cid, dry_run=False)
        return _execute(db, cid, report, pages, by_company, stored_by_company, rollback_id, requested_by, target)
    finally:
        job_store.release_lock(db, cid, holder)


def refuse_on_http_path(db: Database, cid: int, writer: str) -> None:
    """ROLLBACK_REFUSED, nothing written, when the notes were (or would now be) written through the HTTP writer."""
    job_ids = sorted({p["job_id"] for p in db[C.AUDIT].find({"cid": cid, "rolled_back_at": {"$exists": False}})})
    over_http = sorted(
        j["_id"]
        for j in db[C.JOBS].find({"_id": {"$in": job_ids}}, {"config.thresholds.writer": 1})
        if ((j.get("config") or {}).get("thresholds") or {}).get("writer") == HTTP_WRITER
    )
    if writer == HTTP_WRITER or over_http:
        why = f"jobs {over_http} wrote through the CDP notes API" if over_http else "the settings' writer is http"
        raise RollbackRefused(
            {"cid": cid, "writer": HTTP_WRITER, "jobs_written_over_http": over_http, "changed_in_cdp": []},
            f"CID {cid} cannot be rolled back on the HTTP write path ({why}): the CDP notes API contract has no "
            "delete endpoint, and deleting contact_notes in MongoDB would bypass the service (PRD §16b); "
            "nothing rolled back",
        )


def _plan(crm, db: Database, cid: int, *, dry_run: bool) -> tuple[dict[str, Any], list[dict], dict, dict]:
    """What a rollback of the CID would delete; RollbackRefused when a note changed in CDP. Writes nothing."""
    pages, audited = _audited(db, cid)
    if not audited:
        raise Refused(Reason.NOTHING_TO_ROLL_BACK, f"CID {cid} has no migrated notes in its audit map to roll back")
    by_company: dict[str, dict[int, Any]] = {}
    for (company, legacy), note_id in audited.items():
        by_company.setdefault(company, {})[legacy] = note_id
    report: dict[str, Any] = {
        "cid": cid,
        "dry_run": dry_run,
        "companies": sorted(by_company),
        "audited_notes": len(audited),
        "notes_to_delete": 0,
        "notes_already_gone": 0,
        "changed_in_cdp": [],
    }
    stored_by_company: dict[str, dict[int, dict]] = {}
    for company, notes in by_company.items():
        stored = {}
        ids = list(notes.values())
        for i in range(0, len(ids), _CHUNK):
            query = {"_id": {"$in": ids[i : i + _CHUNK]}, "company_sso_id": company}
            for doc in db[C.CONTACT_NOTES].find(query):
                if notes.get(doc.get("legacy_crm_note_id")) == doc["_id"]:
                    stored[doc["legacy_crm_note_id"]] = doc
        stored_by_company[company] = stored
        report["notes_to_delete"] += len(stored)
        report["notes_already_gone"] += len(notes) - len(stored)
        report["changed_in_cdp"] += _changed(crm, db, cid, company, stored)
    if report["changed_in_cdp"]:
        n = len(report["changed_in_cdp"])
        raise RollbackRefused(report, f"{n} notes of CID {cid} changed in CDP after migration; nothing rolled back")
    return report, pages, by_company, stored_by_company


def _execute(
    db: Database,
    cid: int,
    report: dict[str, Any],
    pages: list[dict],
    by_company: dict[str, dict[int, Any]],
    stored_by_company: dict[str, dict[int, dict]],
    rollback_id: str,
    requested_by: str,
    target: s3.Bucket | None,
) -> dict[str, Any]:
    holder = f"rollback:{rollback_id}"

    def fence() -> None:
        if not job_store.holds_lock(db, cid, holder):
            raise Fenced(f"rollback {rollback_id} no longer holds the lock of CID {cid}: it deleted nothing more")

    stamp = utc_now()
    deleted = objects = 0
    for company, stored in stored_by_company.items():
        ids = [d["_id"] for d in stored.values()]
        for i in range(0, len(ids), _CHUNK):
            fence()
            deleted += (
                db[C.CONTACT_NOTES]
                .delete_many({"_id": {"$in": ids[i : i + _CHUNK]}, "company_sso_id": company})
                .deleted_count
            )
        if target is not None:
            fence()
            for legacy in sorted(by_company[company]):
                objects += s3.delete_prefix(target, notes_prefix(company, legacy))
    for page in pages:
        db[C.AUDIT].update_one({"_id": page["_id"]}, {"$set": {"rolled_back_at": stamp, "rollback_id": rollback_id}})
    for job in db[C.JOBS].find(
        {"cid": cid, "rolled_back": {"$exists": False}, "created_at": {"$lt": stamp}}, {"_id": 1}
    ):
        job_store.update_job(db, job["_id"], rolled_back={"at": stamp, "rollback_id": rollback_id, "by": requested_by})
    record = {
        "_id": rollback_id,
        "cid": cid,
        "requested_by": requested_by,
        "at": stamp,
        "companies": report["companies"],
        "audit_pages": len(pages),
        "notes_deleted": deleted,
        "notes_already_gone": report["notes_already_gone"],
        "objects_deleted": objects if target is not None else None,
    }
    db[C.ROLLBACKS].insert_one(record)
    log.info("rolled back CID %s: %s", cid, record)
    return {**report, "rollback": as_plain(record)}


class RollbackRefused(Refused):
    """Some notes changed in CDP after migration: the report lists them; nothing was written."""

    def __init__(self, report: dict[str, Any], message: str):
        super().__init__(Reason.ROLLBACK_REFUSED, message)
        self.report = report


def rollbacks(db: Database, cid: int) -> list[dict]:
    return [as_plain(r) or {} for r in db[C.ROLLBACKS].find({"cid": cid}).sort("at", -1)]
