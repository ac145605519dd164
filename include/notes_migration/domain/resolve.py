"""Pure resolution rules: CRM person → CDP contact (D-12), CRM creator → SSO owner (D-7)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from notes_migration.domain.codes import Reason
from notes_migration.domain.config import UNKNOWN_OWNER_LABEL

log = logging.getLogger(__name__)

_FAR_FUTURE = dt.datetime.max.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class ContactMatch:
    contact_id: str
    candidates: tuple[str, ...]  # every contact that matched, chosen one first

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1


class Resolution(dict[int, ContactMatch]):
    """person → chosen contact, plus the candidate contacts skipped as malformed (each with its reason)."""

    def __init__(self, matches: Mapping[int, ContactMatch] | None = None, malformed: list[dict] | None = None):
        super().__init__(matches or {})
        self.malformed: list[dict] = malformed or []


def crm_data_id(contact: Mapping) -> int | None:
    """The contact's `crm_data.id` when the contract's shape holds it (an object with an integer id)."""
    data = contact.get("crm_data")
    crm_id = data.get("id") if isinstance(data, Mapping) else None
    return crm_id if isinstance(crm_id, int) and not isinstance(crm_id, bool) else None


def contact_shape_problem(contact: Mapping) -> str | None:
    """Why a CDP contact cannot be trusted for resolution (None when its shape is the contract's).

    `crm_data` is optional, but when present it is an object (contract); a list, a string or a number is a
    document CDP should not hold, so the contact is skipped rather than guessed at."""
    data = contact.get("crm_data")
    if data is not None and not isinstance(data, Mapping):
        return f"crm_data is a {type(data).__name__}, not an object"
    return None


def saved_matches(saved: Mapping[int, str]) -> dict[int, ContactMatch]:
    """A run's saved person → contact answers (job_store.save_person_map) as matches."""
    return {p: ContactMatch(c, (c,)) for p, c in saved.items()}


def _rank_for(person_id: int, contact: Mapping) -> tuple:
    return _contact_rank(contact, person_id)


def _contact_rank(contact: Mapping, person_id: int) -> tuple:
    """Deterministic preference: a crm_data.id match, then the oldest contact, then the smallest id."""
    by_crm_data = crm_data_id(contact) == person_id
    created = contact.get("created_at") or _FAR_FUTURE
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return (0 if by_crm_data else 1, created, str(contact["_id"]))


def resolve_contacts(person_ids: Iterable[int], contacts: Iterable[Mapping]) -> Resolution:
    """Map each person to one contact; several matches get a logged, deterministic answer; a contact of an
    unexpected shape is skipped with CONTACT_MALFORMED (listed on the answer), never a crash."""
    wanted = set(person_ids)
    matches: dict[int, list[Mapping]] = {}
    malformed: list[dict] = []
    for contact in contacts:
        problem = contact_shape_problem(contact)
        if problem is not None:
            malformed.append(
                {
                    "contact_id": str(contact.get("_id")),
                    "reason_code": Reason.CONTACT_MALFORMED.value,
                    "details": problem,
                }
            )
            continue
        keys = set()
        crm_id = crm_data_id(contact)
        if crm_id is not None and crm_id in wanted:
            keys.add(crm_id)
        if contact.get("source") == "crm":
            try:
                keys.add(int(contact["source_id"]))
            except (TypeError, ValueError):
                pass
        for person_id in keys & wanted:
            matches.setdefault(person_id, []).append(contact)
    if malformed:
        log.warning("%d CDP contacts skipped as malformed (CONTACT_MALFORMED): %s", len(malformed), malformed[:5])
    out = Resolution(malformed=malformed)
    for person_id, found in matches.items():
        ranked = sorted(found, key=functools.partial(_rank_for, person_id))
        match = ContactMatch(str(ranked[0]["_id"]), tuple(str(c["_id"]) for c in ranked))
        if match.ambiguous:
            log.warning(
                "person %s matches %d contacts %s; chose %s (crm_data.id first, then oldest, then smallest id)",
                person_id,
                len(ranked),
                list(match.candidates),
                match.contact_id,
            )
        out[person_id] = match
    return out


@dataclass(frozen=True)
class CrmUser:
    id: int
    found: bool  # False when creator_id points at a deleted user
    full_name: str | None
    email: str | None


@dataclass(frozen=True)
class OwnerMatch:
    owner_id: str | None
    legacy_owner_label: str | None  # set only when owner_id is None


def resolve_owners(users: Iterable[CrmUser], launchpad_users: Iterable[Mapping]) -> dict[int, OwnerMatch]:
    """crm_user_id first, then case-insensitive email in the company; else a readable label."""
    by_crm_id: dict[int, str] = {}
    by_email: dict[str, str] = {}
    for account in sorted(launchpad_users, key=lambda u: str(u["_id"])):
        crm_id = account.get("crm_user_id")
        if isinstance(crm_id, int):
            by_crm_id.setdefault(crm_id, str(account["_id"]))
        email = (account.get("email") or "").strip().casefold()
        if email:
            by_email.setdefault(email, str(account["_id"]))
    out: dict[int, OwnerMatch] = {}
    for user in users:
        owner = by_crm_id.get(user.id)
        if owner is None and user.email:
            owner = by_email.get(user.email.strip().casefold())
        if owner is not None:
            out[user.id] = OwnerMatch(owner, None)
        else:
            label = (user.full_name or "").strip() if user.found else ""
            out[user.id] = OwnerMatch(None, label or UNKNOWN_OWNER_LABEL)
    return out


UNKNOWN_CREATOR = OwnerMatch(None, UNKNOWN_OWNER_LABEL)
