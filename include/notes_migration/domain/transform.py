"""Pure transformation: a page of CRM note rows in, CDP documents and reason-coded decisions out."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from notes_migration.domain.codes import Reason
from notes_migration.domain.html import InputTooLarge, normalise, utf8_size
from notes_migration.domain.resolve import UNKNOWN_CREATOR, ContactMatch, CrmUser, OwnerMatch
from notes_migration.domain.rows import NoteRow


@dataclass
class Decision:
    """What the page does with one CRM note; `doc` is set only for notes to insert."""

    note_id: int
    doc: dict[str, Any] | None = None
    skip: Reason | None = None
    failure: Reason | None = None
    details: str = ""
    owner_unresolved: bool = False
    checkin_dropped: bool = False
    mentions: int = 0
    # non-failures carried with a migrated note (e.g. HTML_FLATTENED_TO_TEXT), and why
    warnings: list[Reason] = field(default_factory=list)
    warning_details: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def to_millis(value: dt.datetime) -> dt.datetime:
    """BSON dates hold milliseconds: the stored value is the original truncated to the ms."""
    return value.astimezone(dt.UTC).replace(microsecond=value.microsecond // 1000 * 1000)


def crm_users(rows: list[NoteRow]) -> list[CrmUser]:
    seen: dict[int, CrmUser] = {}
    for r in rows:
        if r.creator_id is not None and r.creator_id not in seen:
            seen[r.creator_id] = CrmUser(r.creator_id, r.creator_found, r.creator_name, r.creator_email)
    return list(seen.values())


def build_document(
    row: NoteRow, *, company_sso_id: str, contact_id: str, owner: OwnerMatch, html: str
) -> dict[str, Any]:
    """The contact_notes document of one CRM note (net-new fields of PRD D-1/D-7 included)."""
    doc: dict[str, Any] = {
        "company_sso_id": company_sso_id,
        "contact_id": contact_id,
        "owner_id": owner.owner_id,
        "note": html,
        "attachments": [],
        "created_at": to_millis(row.created_at),
        "updated_at": to_millis(row.updated_at),
        "legacy_crm_note_id": int(row.id),
    }
    if owner.owner_id is None:
        doc["legacy_owner_label"] = owner.legacy_owner_label
    return doc


def decide(
    row: NoteRow,
    *,
    company_sso_id: str,
    include_activities: bool,
    contacts: Mapping[int, ContactMatch],
    owners: Mapping[int, OwnerMatch],
    note_size_cap_bytes: int,
) -> Decision:
    """Scope, resolve, normalise and build one note; never raises for bad input."""
    decision = Decision(note_id=row.id, checkin_dropped=row.has_checkin)
    if row.is_activity and not include_activities:
        decision.skip = Reason.ACTIVITY_OUT_OF_SCOPE
        decision.details = f"activity type {row.note_type_name!r} (notes-only run)"
        return decision
    match = contacts.get(row.crm_person_id)
    if match is None:
        decision.failure = Reason.CONTACT_NOT_MAPPED
        decision.details = f"crm_person_id {row.crm_person_id} has no CDP contact (crm_data.id / source_id)"
        return decision
    try:
        raw_size = utf8_size(row.note or "")
        if raw_size > note_size_cap_bytes:  # before any parse: the parser's cost grows with its input
            decision.failure = Reason.NOTE_TOO_LARGE
            decision.details = f"raw HTML is {raw_size} bytes, cap {note_size_cap_bytes}"
            return decision
        normalised = normalise(row.note, max_input_bytes=note_size_cap_bytes)
    except InputTooLarge as exc:
        decision.failure = Reason.NOTE_TOO_LARGE
        decision.details = str(exc)
        return decision
    except Exception as exc:  # noqa: BLE001 - a note's content must never stop the page: reason-coded failure
        decision.failure = Reason.HTML_NORMALISATION_FAILED
        decision.details = f"{type(exc).__name__}: {exc}"[:500]
        return decision
    if normalised.flattened is not None:
        decision.warnings.append(Reason.HTML_FLATTENED_TO_TEXT)
        decision.warning_details = f"HTML kept as escaped text: {normalised.flattened}"
    size = utf8_size(normalised.html)
    if size > note_size_cap_bytes:
        decision.failure = Reason.NOTE_TOO_LARGE
        decision.details = f"normalised HTML is {size} bytes, cap {note_size_cap_bytes}"
        return decision
    owner = owners.get(row.creator_id, UNKNOWN_CREATOR) if row.creator_id is not None else UNKNOWN_CREATOR
    decision.owner_unresolved = owner.owner_id is None
    decision.mentions = normalised.mentions
    decision.doc = build_document(
        row, company_sso_id=company_sso_id, contact_id=match.contact_id, owner=owner, html=normalised.html
    )
    return decision


# What validation's content check compares, in this order: a note document (as built, or as read back
# from CDP) reduced to these values is `comparable(doc)`.
COMPARED_FIELDS = (
    "contact_id",
    "owner_id",
    "legacy_owner_label",
    "company_sso_id",
    "created_at",
    "updated_at",
    "note_hash",
)
COMPARED_PROJECTION = {"_id": 0, "legacy_crm_note_id": 1, **dict.fromkeys(COMPARED_FIELDS[:-1], 1), "note": 1}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _millis(value: dt.datetime | None) -> int | None:
    """Milliseconds since the epoch, as BSON keeps a date (a naive value read back from CDP is UTC)."""
    if value is None:
        return None
    return ((value if value.tzinfo else value.replace(tzinfo=dt.UTC)) - _EPOCH) // dt.timedelta(milliseconds=1)


def comparable(doc: Mapping[str, Any]) -> tuple:
    """A note document as the values the content check compares (COMPARED_FIELDS): small enough to hold
    for every note of a CID, the HTML reduced to its SHA-256 digest."""
    return (
        doc.get("contact_id"),
        doc.get("owner_id"),
        doc.get("legacy_owner_label"),
        doc.get("company_sso_id"),
        _millis(doc.get("created_at")),
        _millis(doc.get("updated_at")),
        hashlib.sha256((doc.get("note") or "").encode("utf-8")).digest(),
    )


def content_mismatches(expected: Mapping[str, Any] | tuple, stored: Mapping[str, Any] | tuple) -> list[str]:
    """Fields where a stored note differs from what its source yields now (validation's content check);
    either side a document or its `comparable` form."""
    a = expected if isinstance(expected, tuple) else comparable(expected)
    b = stored if isinstance(stored, tuple) else comparable(stored)
    return [field for field, x, y in zip(COMPARED_FIELDS, a, b, strict=True) if x != y]
