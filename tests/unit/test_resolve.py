"""Contact (D-12) and owner (D-7) resolution rules."""

from __future__ import annotations

import datetime as dt

import pytest

from notes_migration.domain.config import UNKNOWN_OWNER_LABEL
from notes_migration.domain.resolve import CrmUser, resolve_contacts, resolve_owners

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def contact(_id, *, crm_id=None, source=None, source_id=None, created=T0):
    doc = {"_id": _id, "created_at": created}
    if crm_id is not None:
        doc["crm_data"] = {"id": crm_id}
    if source is not None:
        doc.update(source=source, source_id=source_id)
    return doc


def test_resolves_by_crm_data_id_or_crm_source_id():
    got = resolve_contacts([1, 2, 3], [contact("a", crm_id=1), contact("b", source="crm", source_id="2")])
    assert {p: m.contact_id for p, m in got.items()} == {1: "a", 2: "b"}
    assert 3 not in got


def test_source_id_of_another_source_never_matches():
    assert resolve_contacts([5], [contact("w", source="web", source_id="5")]) == {}


@pytest.mark.parametrize("order", [0, 1])
def test_several_matches_get_a_deterministic_logged_answer(order, caplog):
    found = [
        contact("z-old-source", source="crm", source_id="9", created=T0 - dt.timedelta(days=5)),
        contact("m-crm-data", crm_id=9, created=T0),
        contact("a-crm-data-newer", crm_id=9, created=T0 + dt.timedelta(days=1)),
    ]
    if order:
        found.reverse()
    match = resolve_contacts([9], found)[9]
    assert match.contact_id == "m-crm-data"  # crm_data.id beats source_id; then the oldest
    assert match.ambiguous and len(match.candidates) == 3
    assert "matches 3 contacts" in caplog.text


def test_owner_by_crm_user_id_then_case_insensitive_email():
    users = [
        CrmUser(1, True, "Ana", "ana@x.example"),
        CrmUser(2, True, "Bo", "BO@X.example"),
        CrmUser(3, True, "Cy", "cy@x.example"),
        CrmUser(4, False, None, None),
        CrmUser(5, True, "  ", None),
    ]
    lp = [{"_id": "u1", "crm_user_id": 1, "email": "other@x.example"}, {"_id": "u2", "email": "bo@x.EXAMPLE"}]
    got = resolve_owners(users, lp)
    assert got[1].owner_id == "u1" and got[1].legacy_owner_label is None
    assert got[2].owner_id == "u2"
    assert got[3].owner_id is None and got[3].legacy_owner_label == "Cy"
    assert got[4].legacy_owner_label == UNKNOWN_OWNER_LABEL  # deleted user
    assert got[5].legacy_owner_label == UNKNOWN_OWNER_LABEL  # blank name
