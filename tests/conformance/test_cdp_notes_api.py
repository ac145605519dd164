"""Conformance of a CDP notes migrate service to contracts/cdp_notes_migrate.openapi.yaml: auth (401 without the S2S
token, 403 with a user token), the batch limits (1–1,000 notes), idempotency on (company, legacy id), caller-set
timestamps kept to the millisecond, server-side sanitising, per-note results, attachments, the count.

Point it at any implementation: CDP_NOTES_API_URL, CDP_NOTES_API_TOKEN, CDP_NOTES_API_USER_TOKEN (see conftest).
Every test writes into a company of its own (a random UUID), so a shared service is not disturbed."""

from __future__ import annotations

import random
import uuid

import pytest

pytestmark = pytest.mark.conformance

MIGRATE = "/cdp/notes/migrate"
COUNT = "/cdp/notes/migrated/count"


def company() -> str:
    return str(uuid.uuid4())


def legacy_id() -> int:
    return random.randrange(10**12, 10**13)


def note(nid: int, **kw) -> dict:
    return {
        "legacy_crm_note_id": nid,
        "contact_id": str(uuid.uuid4()),
        "owner_id": None,
        "legacy_owner_label": "[Legacy CRM User]",
        "note": "<p>Called about the <strong>renewal</strong></p>",
        "attachments": [],
        "created_at": "2019-03-04T05:06:07.123Z",
        "updated_at": "2019-03-05T06:07:08.456Z",
        **kw,
    }


def migrate(target, company_id: str, notes: list[dict], token="s2s"):
    with target.client(token) as c:
        return c.post(MIGRATE, json={"company_sso_id": company_id, "notes": notes})


def count(target, company_id: str) -> int:
    with target.client() as c:
        resp = c.get(COUNT, params={"company_sso_id": company_id, "marker": "legacy_crm_note_id"})
    assert resp.status_code == 200, resp.text
    return resp.json()["count"]


def stored(target, company_id: str, nid: int) -> dict:
    with target.client() as c:
        resp = c.get(f"/cdp/notes/migrated/{nid}", params={"company_sso_id": company_id})
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_without_an_s2s_token_every_endpoint_is_401_and_writes_nothing(target, token):
    cid = company()
    assert migrate(target, cid, [note(legacy_id())], token=token).status_code == 401
    with target.client(token) as c:
        assert c.get(COUNT, params={"company_sso_id": cid}).status_code == 401
    assert count(target, cid) == 0


def test_a_user_token_is_403_and_writes_nothing(target):
    if not target.user_token:
        pytest.skip("CDP_NOTES_API_USER_TOKEN not set")
    cid = company()
    assert migrate(target, cid, [note(legacy_id())], token=target.user_token).status_code == 403
    assert count(target, cid) == 0


@pytest.mark.parametrize("size", [0, 1001])
def test_a_batch_outside_1_to_1000_notes_is_refused_whole(target, size):
    cid = company()
    first = legacy_id()
    resp = migrate(target, cid, [note(first + i) for i in range(size)])
    assert resp.status_code == 422, resp.text
    assert count(target, cid) == 0


def test_a_batch_of_1000_is_accepted_and_counted(target):
    cid = company()
    first = legacy_id()
    resp = migrate(target, cid, [note(first + i) for i in range(1000)])
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["legacy_crm_note_id"] for r in results] == [first + i for i in range(1000)]  # request order
    assert {r["status"] for r in results} == {"inserted"}
    assert count(target, cid) == 1000


def test_a_repeated_batch_inserts_nothing_and_answers_already_migrated(target):
    cid = company()
    ids = [legacy_id() for _ in range(3)]
    first = migrate(target, cid, [note(i) for i in ids[:2]])
    assert [r["status"] for r in first.json()["results"]] == ["inserted", "inserted"]
    assert all(r.get("note_id") for r in first.json()["results"])
    again = migrate(target, cid, [note(i) for i in ids])
    assert again.status_code == 200
    by_id = {r["legacy_crm_note_id"]: r["status"] for r in again.json()["results"]}
    assert by_id == {ids[0]: "already_migrated", ids[1]: "already_migrated", ids[2]: "inserted"}
    assert count(target, cid) == 3


def test_the_same_legacy_id_in_another_company_is_not_a_conflict(target):
    nid = legacy_id()
    a, b = company(), company()
    assert migrate(target, a, [note(nid)]).json()["results"][0]["status"] == "inserted"
    assert migrate(target, b, [note(nid)]).json()["results"][0]["status"] == "inserted"
    assert count(target, a) == count(target, b) == 1


def test_caller_timestamps_are_kept_to_the_millisecond_in_utc(target):
    cid, nid = company(), legacy_id()
    body = note(nid, created_at="2015-07-01T23:59:59.001+02:00", updated_at="2016-01-02T03:04:05.999Z")
    assert migrate(target, cid, [body]).json()["results"][0]["status"] == "inserted"
    got = stored(target, cid, nid)
    assert got["created_at"].replace("+00:00", "Z") == "2015-07-01T21:59:59.001Z"
    assert got["updated_at"].replace("+00:00", "Z") == "2016-01-02T03:04:05.999Z"
    assert got["legacy_crm_note_id"] == nid and got["company_sso_id"] == cid


def test_the_service_sanitises_and_keeps_safe_markup(target):
    cid = company()
    hostile, safe = legacy_id(), legacy_id()
    notes = [
        note(hostile, note='<p onclick="steal()">hi<script>alert(1)</script><a href="javascript:x()">x</a></p>'),
        note(safe, note="<p>Called about the <strong>renewal</strong></p>"),
    ]
    assert {r["status"] for r in migrate(target, cid, notes).json()["results"]} == {"inserted"}
    html = stored(target, cid, hostile)["note"]
    for bad in ("<script", "onclick", "javascript:", "alert(1)"):
        assert bad not in html, html
    assert "hi" in html
    assert stored(target, cid, safe)["note"] == "<p>Called about the <strong>renewal</strong></p>"


def test_a_bad_note_is_rejected_with_a_reason_and_the_others_go_in(target):
    cid = company()
    good, bad = legacy_id(), legacy_id()
    notes = [note(good), note(bad, created_at="2020-01-02T00:00:00.000Z", updated_at="2020-01-01T00:00:00.000Z")]
    results = {r["legacy_crm_note_id"]: r for r in migrate(target, cid, notes).json()["results"]}
    assert results[good]["status"] == "inserted"
    assert results[bad]["status"] == "rejected" and results[bad]["reason"]
    assert count(target, cid) == 1


def test_attachments_of_a_migrated_note_are_set_whole(target):
    cid, nid = company(), legacy_id()
    migrate(target, cid, [note(nid)])
    entry = {
        "type": "image",
        "file_type": "png",
        "name": "a.png",
        "size": 3,
        "mime_type": "image/png",
        "url": f"https://cdp.example/api/v1/files/{cid}/notes/{nid}/asset-1-a.png",
    }
    body = {"company_sso_id": cid, "notes": [{"legacy_crm_note_id": nid, "attachments": [entry]}]}
    for _ in range(2):  # a re-run replaces, never appends
        with target.client() as c:
            resp = c.post(f"{MIGRATE}/attachments", json=body)
        assert resp.status_code == 200 and resp.json()["results"][0]["status"] == "updated", resp.text
    got = stored(target, cid, nid)
    assert [a["url"] for a in got["attachments"]] == [entry["url"]]
    assert got["updated_at"].replace("+00:00", "Z") == "2019-03-05T06:07:08.456Z"  # left as given
    missing = {"company_sso_id": cid, "notes": [{"legacy_crm_note_id": legacy_id(), "attachments": []}]}
    with target.client() as c:
        assert c.post(f"{MIGRATE}/attachments", json=missing).json()["results"][0]["status"] == "not_found"


def test_the_count_is_scoped_to_company_and_marker(target):
    cid = company()
    assert count(target, cid) == 0
    migrate(target, cid, [note(legacy_id()) for _ in range(2)])
    assert count(target, cid) == 2
    with target.client() as c:
        assert c.get(COUNT, params={"company_sso_id": cid, "marker": "something_else"}).status_code == 422
        assert c.get(COUNT, params={"company_sso_id": "not-a-uuid"}).status_code == 422
