"""The sign-off view of a CID (PRD §14 QA, the pilot's CSM sign-off, story S05): a sample of its notes, each as
the CRM held it and as the CDP stores it, what changed and why; a contact's timeline as an agent sees it; and
the sign-off record (who, when, the sample's seed, a free-text verdict), stored with the job.

The sample's choice is domain/signoff.py; this module gathers its candidates from the job's note log and events,
the CRM and the CDP, and builds plain data for the plugin's page, its JSON route and the CLI."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pymongo.database import Database

from notes_migration.domain import signoff as rules
from notes_migration.domain.attachment_plan import UNAVAILABLE_MESSAGE
from notes_migration.domain.codes import Event, Reason, Refused, State
from notes_migration.domain.explain import OWNER_NOT_RESOLVED_WORDS, reason_words, state_words
from notes_migration.domain.html import normalise
from notes_migration.domain.plain import as_plain
from notes_migration.ops.queries import cid_status, require_cid
from notes_migration.stores import cdp_store, crm_source, job_store

SIGNABLE_STATES = frozenset({State.COMPLETED_SUCCESS.value, State.COMPLETED_WITH_ERRORS.value})
ATTACHMENT_KINDS = ("image", "voice_note", "audio", "document")
CRM_ZONE = "UTC (the CRM stores UTC wall-clock time without a zone)"


def _job(db: Database, cid: int) -> dict[str, Any] | None:
    return job_store.latest_job(db, cid)


# The warning of a migrated note whose author has no CDP user (an event, not a reason code of the note log).
OWNER_WARNING = {
    "outcome": "migrated",
    "reason_code": "OWNER_NOT_RESOLVED",
    "category": "owner not resolved (legacy label)",
}


def candidates(
    crm, db: Database, cid: int, job: Mapping[str, Any], status: Mapping[str, Any]
) -> tuple[dict[str, list[int]], list[dict]]:
    """{category: note ids}, in the order a person should see them, and the job's reasons with their counts."""
    job_id, company = job["_id"], job["company_sso_id"]
    reasons = job_store.first_notes_by_reason(db, job_id)
    crm_found = crm_source.sample_candidates(crm, cid)
    no_person = crm_found.pop("not a person note")
    counted = int(((status.get("counts") or {}).get("out_of_scope") or {}).get(Reason.NOT_A_PERSON_NOTE, 0))
    if counted and no_person:  # counted by the pages, not logged per note: the CRM names them
        reasons.append(
            {"outcome": "skipped", "reason_code": Reason.NOT_A_PERSON_NOTE.value, "count": counted}
            | {"note_ids": no_person}
        )
    out: dict[str, list[int]] = {}
    for r in reasons:
        r["category"] = f"reason {r['reason_code']} ({r['outcome']})"
        out[r["category"]] = r["note_ids"]
    owners = job_store.event_subjects(db, job_id, Event.OWNER_NOT_RESOLVED.value)
    unresolved = [
        int(e["properties"]["legacy_crm_note_id"]) for e in owners if e.get("properties", {}).get("legacy_crm_note_id")
    ]
    out[OWNER_WARNING["category"]] = unresolved
    counted_owners = int((status.get("counts") or {}).get("owners_unresolved") or 0)
    if counted_owners:  # a warning of the run beside its reason codes: the table says whether the sample shows one
        reasons.append({**OWNER_WARNING, "count": counted_owners, "note_ids": unresolved[:2]})
    out["mention"] = crm_found.pop("mention")
    for kind in ATTACHMENT_KINDS:
        out[f"attachment: {kind}"] = cdp_store.migrated_note_ids_where(db, company, {"attachments.type": kind})
    out["attachment unavailable"] = cdp_store.migrated_note_ids_where(db, company, {"attachments.unavailable": True})
    for kind in ("image", "audio / voice note", "document"):  # the CRM's files, whether or not they made it
        out.setdefault(f"CRM file: {kind}", crm_found.pop(kind))
    out.update(crm_found)  # oldest, newest
    return out, reasons


def sample(crm, db: Database, cid: int, *, seed: int | None = None, random_draw: int = rules.RANDOM_DRAW) -> dict:
    """The sign-off view's data for the CID's latest real job: its status, the sample (each note as two panes and
    its changes), the reasons the run recorded and whether each is covered, the sign-offs so far."""
    require_cid(crm, cid)
    status = cid_status(db, cid)
    job = _job(db, cid)
    seed = int(seed) if seed is not None else rules.new_seed()
    view: dict[str, Any] = {
        "cid": cid,
        "status": status,
        "state_words": state_words(status.get("status")),
        "seed": seed,
        "random_draw": random_draw,
        "notes": [],
        "reasons": [],
        "signoff": None,
        "signoffs": [],
        "signable": status.get("status") in SIGNABLE_STATES,
    }
    if job is None:
        return view
    cats, reasons = candidates(crm, db, cid, job, status)
    picks = rules.choose(cats, crm_source.in_scope_note_ids(crm, cid), seed=seed, random_draw=random_draw)
    ids = [p.note_id for p in picks]
    rows = {r.id: r for r in crm_source.read_any_notes(crm, cid, ids)}
    files: dict[int, list[dict]] = {}
    for f in crm_source.read_note_files(crm, cid, ids):
        files.setdefault(f.note_id, []).append(
            {"ref": f"{f.kind}-{f.id}", "kind": f.kind, "asset_type": f.asset_type, "name": f.file_name}
            | {"content_type": f.content_type, "size": f.size}
        )
    stored = {int(d["legacy_crm_note_id"]): d for d in cdp_store.stored_notes(db, job["company_sso_id"], ids)}
    log: dict[int, list[dict]] = {}
    for e in job_store.note_log_of_notes(db, job["_id"], ids):
        log.setdefault(int(e["legacy_crm_note_id"]), []).append(e)
    view["notes"] = [_note(p, rows.get(p.note_id), stored.get(p.note_id), log.get(p.note_id, []), files) for p in picks]
    names = cdp_store.user_names(db, job["company_sso_id"], [n["cdp"]["owner_id"] for n in view["notes"] if n["cdp"]])
    for n in view["notes"]:
        if n["cdp"] and n["cdp"]["owner_id"]:
            n["cdp"]["owner_name"] = names.get(n["cdp"]["owner_id"])
    covered = {why for p in picks for why in p.why} | {
        f"reason {e['reason_code']} ({e['outcome']})" for n in view["notes"] for e in n["log"]
    }
    view["reasons"] = [
        {**r, "words": reason_words(r["reason_code"]), "in_sample": r["category"] in covered} for r in reasons
    ]
    view["signoff"] = as_plain(job.get("signoff"))
    view["signoffs"] = [as_plain(s) for s in reversed(job.get("signoffs") or [])]
    view["job_id"] = job["_id"]
    view["company_sso_id"] = job["company_sso_id"]
    return view


def _note(
    pick: rules.Pick, row: Any, stored: Mapping[str, Any] | None, log: list[dict], files: Mapping[int, list[dict]]
) -> dict[str, Any]:
    original: dict[str, Any] | None = None
    if row is not None:
        original = {
            "html": row.note or "",
            "author": row.creator_name or (f"user {row.creator_id} (deleted)" if row.creator_id else "no author"),
            "author_email": row.creator_email,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "zone": CRM_ZONE,
            "type": row.type,
            "note_type": row.note_type_name,
            "crm_person_id": row.crm_person_id,
            "files": files.get(row.id, []),
        }
    cdp: dict[str, Any] | None = None
    changes: list[str] = []
    if stored is not None:
        attachments = []
        for a in stored.get("attachments") or []:
            entry = {k: a.get(k) for k in ("type", "name", "url", "mime_type", "size", "reason_code")}
            entry["unavailable"] = bool(a.get("unavailable"))
            entry["message"] = a.get("message") or (UNAVAILABLE_MESSAGE if entry["unavailable"] else None)
            entry["reason_words"] = reason_words(a.get("reason_code"))
            attachments.append(entry)
        cdp = {
            "id": str(stored.get("_id")),
            "html": stored.get("note") or "",
            "owner_id": stored.get("owner_id"),
            "legacy_owner_label": stored.get("legacy_owner_label"),
            "contact_id": str(stored.get("contact_id")),
            "created_at": stored.get("created_at"),
            "attachments": attachments,
        }
        if original is not None:
            changes = rules.sanitiser_changes(original["html"], cdp["html"])
            if cdp["owner_id"] is None:
                changes.append(OWNER_NOT_RESOLVED_WORDS)
    elif original is not None and original["html"]:
        # not in the CDP (skipped or failed): what the sanitiser would have stored, for comparison
        changes = [f"not in the CDP; its cleaned form would be {len(normalise(original['html']).html)} characters"]
    entries = [
        {
            "outcome": e.get("outcome"),
            "reason_code": e.get("reason_code"),
            "details": e.get("details"),
            "words": reason_words(e.get("reason_code")),
            "file": e.get("attachment_id") or e.get("file_name"),
        }
        for e in sorted(log, key=lambda e: (str(e.get("outcome")), str(e.get("reason_code"))))
    ]
    return {
        "note_id": pick.note_id,
        "why": pick.why,
        "original": original,
        "cdp": cdp,
        "log": entries,
        "changes": changes,
    }


def record(
    db: Database, cid: int, *, by: str, seed: int, verdict: str, job_id: str | None = None, sample_size: int = 0
) -> dict[str, Any]:
    """Record a sign-off on the CID's latest real job. Refused (SIGNOFF_REFUSED, nothing written) when there is
    no finished job, the job is not the one the page showed (a newer run meanwhile), or the verdict is empty."""
    job = _job(db, cid)
    status = cid_status(db, cid)
    if job is None or status.get("status") not in SIGNABLE_STATES:
        raise Refused(
            Reason.SIGNOFF_REFUSED,
            f"CID {cid} has no finished migration to sign off (status {status.get('status')})",
        )
    if job_id and job_id != job["_id"]:
        raise Refused(Reason.SIGNOFF_REFUSED, f"job {job_id} is no longer the CID's latest job ({job['_id']})")
    text = (verdict or "").strip()
    if not text:
        raise Refused(Reason.SIGNOFF_REFUSED, "a sign-off needs a verdict (free text)")
    if len(text) > rules.MAX_VERDICT_CHARS:
        raise Refused(Reason.SIGNOFF_REFUSED, f"the verdict is over {rules.MAX_VERDICT_CHARS} characters")
    entry = {
        "by": by,
        "at": dt.datetime.now(dt.UTC),
        "seed": int(seed),
        "verdict": text,
        "job_id": job["_id"],
        "status": status.get("status"),
        "sample_size": int(sample_size),
    }
    job_store.record_signoff(db, job["_id"], entry)
    return {"cid": cid, "signoff": as_plain(entry)}


def timeline(db: Database, cid: int, contact_id: str, limit: int = 500) -> dict[str, Any]:
    """One contact's notes in the CID's company, newest first, as the CDP front end lists them."""
    job = _job(db, cid)
    if job is None:
        raise Refused(Reason.JOB_NOT_FOUND, f"CID {cid} has no migration job")
    company = job["company_sso_id"]
    notes = cdp_store.contact_timeline(db, company, contact_id, limit)
    if not notes:
        from bson import ObjectId
        from bson.errors import InvalidId

        try:
            notes = cdp_store.contact_timeline(db, company, ObjectId(contact_id), limit)
        except (InvalidId, TypeError):
            notes = []
    names = cdp_store.user_names(db, company, [n.get("owner_id") for n in notes])
    return {
        "cid": cid,
        "company_sso_id": company,
        "contact_id": contact_id,
        "notes": [
            {
                "id": str(n.get("_id")),
                "legacy_crm_note_id": n.get("legacy_crm_note_id"),
                "html": n.get("note") or "",
                "author": n.get("owner_id") or n.get("legacy_owner_label") or "—",
                "legacy_label": n.get("owner_id") is None,
                "author_name": names.get(n.get("owner_id") or ""),
                "created_at": n.get("created_at"),
                "attachments": [
                    {k: a.get(k) for k in ("type", "name", "url", "unavailable", "message")}
                    for a in n.get("attachments") or []
                ],
            }
            for n in notes
        ],
    }
