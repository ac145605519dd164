"""One CRM row → one decision and CDP document."""

from __future__ import annotations

import datetime as dt

import pytest

from notes_migration.domain.codes import Reason
from notes_migration.domain.resolve import ContactMatch, OwnerMatch
from notes_migration.domain.rows import NoteRow
from notes_migration.domain.transform import content_mismatches, decide, to_millis

COMPANY = "0b7d3c1e-5a4f-4e8b-9c2d-6e7f8a9b0c1d"
CREATED = dt.datetime(2019, 3, 4, 5, 6, 7, 891234, tzinfo=dt.UTC)


def row(**kw):
    base = dict(
        id=11,
        organization_id=1,
        type="Crm::PersonNote",
        note="<div>hi</div>",
        crm_person_id=7,
        crm_company_id=None,
        crm_deal_id=None,
        crm_ticket_id=None,
        creator_id=3,
        creator_found=True,
        creator_name="Ana",
        creator_email="a@x",
        note_type_name="Notes",
        has_checkin=False,
        created_at=CREATED,
        updated_at=CREATED + dt.timedelta(seconds=1, microseconds=999),
    )
    base.update(kw)
    return NoteRow(**base)


def run(r, *, contacts=None, owners=None, include_activities=False, cap=10_000):
    return decide(
        r,
        company_sso_id=COMPANY,
        include_activities=include_activities,
        contacts={7: ContactMatch("c7", ("c7",))} if contacts is None else contacts,
        owners={3: OwnerMatch("o3", None)} if owners is None else owners,
        note_size_cap_bytes=cap,
    )


def test_builds_the_cdp_document_with_original_utc_timestamps():
    d = run(row())
    assert d.doc == {
        "company_sso_id": COMPANY,
        "contact_id": "c7",
        "owner_id": "o3",
        "note": "<div>hi</div>",
        "attachments": [],
        "created_at": dt.datetime(2019, 3, 4, 5, 6, 7, 891000, tzinfo=dt.UTC),
        "updated_at": dt.datetime(2019, 3, 4, 5, 6, 8, 892000, tzinfo=dt.UTC),
        "legacy_crm_note_id": 11,
    }
    assert d.failure is None and d.skip is None


@pytest.mark.parametrize("type_name", ["Calls", "Emails", "Meetings", "WhatsApp", "SMS"])
def test_activities_are_out_of_scope_unless_included(type_name):
    assert run(row(note_type_name=type_name)).skip == Reason.ACTIVITY_OUT_OF_SCOPE
    assert run(row(note_type_name=type_name), include_activities=True).doc is not None


@pytest.mark.parametrize("type_name", ["Notes", None, "Site visit"])
def test_notes_custom_types_and_no_type_are_notes(type_name):
    assert run(row(note_type_name=type_name)).doc is not None


@pytest.mark.parametrize("sti", ["Crm::CompanyNote", "Crm::DealNote", "Crm::TicketNote"])
def test_multi_fk_notes_with_a_person_are_migrated_whatever_the_sti_type(sti):
    d = run(row(type=sti, crm_company_id=4, crm_deal_id=5))
    assert d.doc is not None and d.doc["contact_id"] == "c7"


def test_unmapped_person_is_a_reason_coded_failure():
    d = run(row(), contacts={})
    assert d.failure == Reason.CONTACT_NOT_MAPPED and d.doc is None and "7" in d.details


def test_unresolved_owner_carries_the_label():
    d = run(row(), owners={3: OwnerMatch(None, "Ana")})
    assert d.doc["owner_id"] is None and d.doc["legacy_owner_label"] == "Ana" and d.owner_unresolved
    d = run(row(creator_id=None))
    assert d.doc["legacy_owner_label"] == "[Legacy CRM User]"


def test_oversized_note_fails_with_a_reason_never_truncated():
    d = run(row(note="<div>" + "x" * 200 + "</div>"), cap=100)
    assert d.failure == Reason.NOTE_TOO_LARGE and d.doc is None and "cap 100" in d.details


def test_checkin_is_dropped_but_the_note_migrates():
    d = run(row(has_checkin=True))
    assert d.doc is not None and d.checkin_dropped


def test_legacy_id_is_never_null():
    assert run(row()).doc["legacy_crm_note_id"] == 11


def test_content_mismatches_detects_each_field():
    expected = run(row()).doc
    assert content_mismatches(expected, dict(expected)) == []
    stored = dict(
        expected,
        contact_id="other",
        note="<div>changed</div>",
        created_at=expected["created_at"] + dt.timedelta(milliseconds=1),
    )
    assert content_mismatches(expected, stored) == ["contact_id", "created_at", "note_hash"]


def test_to_millis_truncates_like_bson():
    assert to_millis(dt.datetime(2020, 1, 1, 0, 0, 0, 999999, tzinfo=dt.UTC)).microsecond == 999000
