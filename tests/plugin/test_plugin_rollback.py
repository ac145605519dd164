"""POST /api/cids/{cid}/rollback: Bearer only, dry run by default, reason-coded refusals that write nothing.

The rollback itself (exact removal, refusal on changed notes, re-migration) is tested against the real servers in
tests/integration/test_rollback.py. CIDs used here: 9060–9061.
"""

from __future__ import annotations

from devtools.seed import SeedSpec
from notes_migration.domain import config as C
from notes_migration.domain.codes import Reason
from tests.cids import cids
from tests.plugin.plugin_support import PREFIX

CID, EMPTY = cids(__name__)


def url(cid: int) -> str:
    return f"{PREFIX}/api/cids/{cid}/rollback"


def test_rollback_route(client, auth, ops_token, viewer_token, run_dag, seed_cid, cdp):
    cdp[C.ROLLBACKS].delete_many({"cid": {"$in": [CID, EMPTY]}})  # records of earlier sessions (seeding keeps them)
    seeded = seed_cid(SeedSpec(cid=CID, notes=20, image_share=0.0, audio_share=0.0, document_share=0.0))
    seed_cid(SeedSpec(cid=EMPTY, notes=5))
    run_dag({"cid": CID, "company_sso_id": seeded["company_sso_id"], "batch_size": 20})
    query = {"company_sso_id": seeded["company_sso_id"], "legacy_crm_note_id": {"$exists": True}}
    n = cdp[C.CONTACT_NOTES].count_documents(query)
    assert n > 0

    # authentication like every state-changing route: no token / cookie only / bad token → 401, viewer → 403
    assert client.post(url(CID)).status_code == 401
    assert client.post(url(CID), headers={"Cookie": f"_token={ops_token}"}).status_code == 401
    assert client.post(url(CID), headers={"Authorization": "Bearer x.y.z"}).status_code == 401
    assert client.post(url(CID), headers={"Authorization": f"Bearer {viewer_token}"}).status_code == 403
    assert cdp[C.CONTACT_NOTES].count_documents(query) == n

    dry = client.post(url(CID), headers=auth)  # dry run by default
    assert dry.status_code == 200, dry.text
    assert (dry.json()["dry_run"], dry.json()["notes_to_delete"]) == (True, n)
    assert cdp[C.CONTACT_NOTES].count_documents(query) == n and cdp[C.ROLLBACKS].count_documents({"cid": CID}) == 0

    nothing = client.post(url(EMPTY), headers=auth)
    assert (nothing.status_code, nothing.json()["reason_code"]) == (404, Reason.NOTHING_TO_ROLL_BACK)

    done = client.post(url(CID), params={"dry_run": "false"}, headers=auth)
    assert done.status_code == 200, done.text
    assert done.json()["rollback"]["notes_deleted"] == n and done.json()["rollback"]["requested_by"] == "ops"
    assert cdp[C.CONTACT_NOTES].count_documents(query) == 0
    again = client.post(url(CID), params={"dry_run": "false"}, headers=auth)
    assert (again.status_code, again.json()["reason_code"]) == (404, Reason.NOTHING_TO_ROLL_BACK)

    # the status and the Ops view say rolled_back, with who and what was deleted
    status = client.get(f"{PREFIX}/api/status", params={"cid": CID}, headers=auth).json()
    assert status["status"] == "rolled_back" and status["rollback"]["notes_deleted"] == n, status
    assert status["rollback"]["by"] == "ops" and "notes_migrated" not in status
    page = client.get(f"{PREFIX}/ui", params={"cid": CID}, headers={"Cookie": f"_token={ops_token}"})
    assert page.status_code == 200 and "rolled back by ops" in page.text and f"{n} notes" in page.text
    assert 'class="badge s-rolled_back"' in page.text or "s-rolled_back" in page.text
