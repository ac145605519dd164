"""The HTTP writer (stores/cdp_api.py) against a scripted transport: per-note results, the one retry of a 5xx or a
timeout (PRD §9 #7), a refused token, the JSON it sends; and the settings key that chooses the writer."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest
from bson import ObjectId

from notes_migration.domain.config import Thresholds
from notes_migration.stores.cdp_api import Endpoint, HttpNoteWriter, Unauthorized

pytestmark = pytest.mark.unit

COMPANY = "0b7d3c1e-5a4f-4e8b-9c2d-6e7f8a9b0c1d"


def doc(nid: int) -> dict:
    return {
        "_id": ObjectId(),
        "company_sso_id": COMPANY,
        "contact_id": "c",
        "owner_id": None,
        "note": "<p>x</p>",
        "attachments": [],
        "created_at": dt.datetime(2019, 3, 4, 5, 6, 7, 123000, tzinfo=dt.UTC),
        "updated_at": dt.datetime(2019, 3, 4, 5, 6, 7, 123000),
        "legacy_crm_note_id": nid,
    }


def writer(*answers) -> tuple[HttpNoteWriter, list[httpx.Request]]:
    """A writer whose requests get `answers` in turn (a status with a JSON body, or an exception to raise)."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        return httpx.Response(status, json=body)

    client = httpx.Client(base_url="http://cdp.test", transport=httpx.MockTransport(handler))
    return HttpNoteWriter(Endpoint("http://cdp.test", "s2s-secret", 1.0), client, sleep=lambda _: None), seen


def ok(*results) -> tuple[int, dict]:
    return 200, {"company_sso_id": COMPANY, "results": list(results)}


def test_each_note_gets_the_outcome_the_service_answered_and_the_body_follows_the_contract():
    oid = str(ObjectId())
    w, seen = writer(
        ok(
            {"legacy_crm_note_id": 1, "status": "inserted", "note_id": oid},
            {"legacy_crm_note_id": 2, "status": "already_migrated"},
            {"legacy_crm_note_id": 3, "status": "rejected", "reason": "INVALID_TIMESTAMPS"},
        )
    )
    result = w.write([doc(1), doc(2), doc(3), doc(4)])
    assert result.inserted == {1: ObjectId(oid)}
    assert result.already_migrated == {2}
    assert result.errors[3] == "rejected: INVALID_TIMESTAMPS"
    assert "no result" in result.errors[4]
    [request] = seen
    assert request.url.path == "/cdp/notes/migrate" and request.headers["Authorization"] == "Bearer s2s-secret"
    body = json.loads(request.content)
    assert body["company_sso_id"] == COMPANY
    first = body["notes"][0]
    assert "_id" not in first and "company_sso_id" not in first
    assert first["created_at"] == first["updated_at"] == "2019-03-04T05:06:07.123Z"  # naive read as UTC


@pytest.mark.parametrize("failure", [(500, {}), (503, {}), httpx.ReadTimeout("slow"), httpx.ConnectError("down")])
def test_a_5xx_or_a_timeout_is_retried_once(failure):
    w, seen = writer(failure, ok({"legacy_crm_note_id": 1, "status": "inserted", "note_id": "n1"}))
    result = w.write([doc(1)])
    assert result.inserted == {1: "n1"} and not result.errors and len(seen) == 2


@pytest.mark.parametrize("failure", [(500, {}), httpx.ReadTimeout("slow")])
def test_failing_twice_fails_every_note_of_the_batch(failure):
    w, seen = writer(failure, failure)
    result = w.write([doc(1), doc(2)])
    assert set(result.errors) == {1, 2} and not result.inserted and len(seen) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_raises_and_is_not_retried(status):
    w, seen = writer((status, {}))
    with pytest.raises(Unauthorized) as refused:
        w.write([doc(1)])
    assert refused.value.status == status and len(seen) == 1
    assert "s2s-secret" not in str(refused.value)


def test_a_batch_over_1000_is_split_and_a_4xx_fails_its_notes():
    w, seen = writer(
        ok(*({"legacy_crm_note_id": i, "status": "inserted", "note_id": "x"} for i in range(1, 1001))), (422, {})
    )
    result = w.write([doc(i) for i in range(1, 1002)])
    assert len(result.inserted) == 1000 and set(result.errors) == {1001}
    assert [len(json.loads(r.content)["notes"]) for r in seen] == [1000, 1]


def test_the_writer_setting_defaults_to_mongo_and_refuses_anything_else():
    assert Thresholds.from_mapping({}).writer == "mongo"
    assert Thresholds.from_mapping({"writer": "http"}).writer == "http"
    with pytest.raises(ValueError, match="writer"):
        Thresholds.from_mapping({"writer": "ftp"})
