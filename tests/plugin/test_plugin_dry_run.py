"""The dry-run report through the Ops API and UI: `GET /api/status?cid=N&dry_run=true`, apart from the CID's real
status, authenticated like every route. Real JWTs, real FerretDB, PostgreSQL and S3.

CIDs used here: 9110–9111.
"""

from __future__ import annotations

import pytest

from devtools.seed import SeedSpec
from notes_migration.domain.config import CONTACT_NOTES, RunConfig
from tests.cids import cids
from tests.helpers import run_steps
from tests.plugin.plugin_support import PREFIX

CID = cids(__name__)[0]


@pytest.fixture(scope="module")
def dry_job(seed_cid, crm, cdp):
    """A complete dry run of the CID, its steps run in-process (no Airflow needed for the report)."""
    seeded = seed_cid(SeedSpec(cid=CID, notes=40, image_share=0.3, missing_file_share=0.0))
    cfg = RunConfig(cid=CID, company_sso_id=seeded["company_sso_id"], batch_size=20, dry_run=True)
    run_id = "dry-9110"
    job = run_steps(crm, cdp, cfg, run_id)
    migrated = {"company_sso_id": seeded["company_sso_id"], "legacy_crm_note_id": {"$exists": True}}
    assert cdp[CONTACT_NOTES].count_documents(migrated) == 0
    return job


def test_dry_run_report_is_served_apart_from_the_real_status(client, auth, dry_job):
    resp = client.get(f"{PREFIX}/api/status", params={"cid": CID, "dry_run": "true"}, headers=auth)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    report = body["dry_run_report"]
    assert body["dry_run"] is True and body["job_id"] == report["job_id"] == dry_job["job_id"]
    assert report["counts"]["would_migrate"] > 0 and report["attachments"]["to_copy"] > 0
    assert report["attachments"]["to_copy_bytes"] > 0 and report["eta"]["seconds"] >= 0
    assert report["predicted_verdict"]["state"] == "completed_success"
    real = client.get(f"{PREFIX}/api/status", params={"cid": CID}, headers=auth).json()
    assert real["status"] == "not_started" and "dry_run_report" not in real


def test_dry_run_report_needs_authentication_and_a_known_cid(client, auth, dry_job):
    assert client.get(f"{PREFIX}/api/status", params={"cid": CID, "dry_run": "true"}).status_code == 401
    resp = client.get(f"{PREFIX}/api/status", params={"cid": 9111, "dry_run": "true"}, headers=auth)
    assert resp.status_code == 404 and resp.json()["reason_code"] == "CID_NOT_FOUND"


def test_the_ui_shows_the_latest_dry_run(client, ops_token, dry_job):
    html = client.get(f"{PREFIX}/ui", params={"cid": CID}, headers={"Cookie": f"_token={ops_token}"}).text
    assert "Latest dry run" in html and dry_job["job_id"] in html
    assert "predicted verdict" in html and "files to copy" in html
    assert f'href="api/status?cid={CID}&amp;dry_run=true"' in html
