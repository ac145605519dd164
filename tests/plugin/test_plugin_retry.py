"""POST /api/jobs/{job_id}/retry: the failed-record queue (OQ-3) retried after a contact backfill recovers exactly
the backfilled notes, keeps conservation and updates the verdict; refusals are reason-coded and write nothing.
Real JWTs, real FerretDB, PostgreSQL and S3.

CIDs used here: 9130–9131.
"""

from __future__ import annotations

import datetime as dt

import pytest

from devtools.seed import SeedSpec, backfill_contacts
from notes_migration.domain.config import CONTACT_NOTES, JOBS, NOTE_LOG, RunConfig, Thresholds
from notes_migration.ops.queries import cid_status
from notes_migration.stores import job_store
from tests.cids import cids
from tests.helpers import assert_conserved, run_steps
from tests.plugin.plugin_support import PREFIX

CID = cids(__name__)[0]
THRESHOLDS = Thresholds(coverage_gate=0.5, max_failure_rate=0.5)  # failures tolerated: completed_with_errors


def url(job_id: str) -> str:
    return f"{PREFIX}/api/jobs/{job_id}/retry"


@pytest.fixture(scope="module")
def failed_job(seed_cid, crm, cdp):
    """A finished real run of the CID with CONTACT_NOT_MAPPED failures, its steps run in-process."""
    seeded = seed_cid(SeedSpec(cid=CID, notes=120, unmapped_person_share=0.2, image_share=0.4, missing_file_share=0))
    cfg = RunConfig(cid=CID, company_sso_id=seeded["company_sso_id"], batch_size=30, thresholds=THRESHOLDS)
    run_id = "retry-9130"
    job = run_steps(crm, cdp, cfg, run_id)
    return {**job, "company_sso_id": seeded["company_sso_id"]}


def failed_ids(cdp, job_id: str) -> set[int]:
    return {e["legacy_crm_note_id"] for e in cdp[NOTE_LOG].find({"job_id": job_id, "outcome": "failed"})}


def persons_of(crm, ids: set[int]) -> dict[int, int]:
    with crm.cursor() as cur:
        cur.execute("SELECT id, crm_person_id FROM crm_notes WHERE id = ANY(%s)", (sorted(ids),))
        return dict(cur.fetchall())


def test_refusals_are_reason_coded_and_write_nothing(client, auth, ops_token, failed_job, cdp):
    job_id = failed_job["job_id"]
    before = (cdp[JOBS].find_one({"_id": job_id}), sorted(failed_ids(cdp, job_id)))
    assert client.post(url(job_id)).status_code == 401  # anonymous
    assert client.post(url(job_id), headers={"Cookie": f"_token={ops_token}"}).status_code == 401  # cookie: never
    cases = [
        ("no-such-job", None, 404, "JOB_NOT_FOUND"),
        (job_id, {"reason_codes": ["NOTE_TOO_LARGE"]}, 409, "NOTHING_TO_RETRY"),
        (job_id, {"reason_codes": ["ACTIVITY_OUT_OF_SCOPE"]}, 422, "RETRY_REFUSED"),
    ]
    for target, body, code, reason in cases:
        resp = client.post(url(target), json=body, headers=auth)
        assert (resp.status_code, resp.json().get("reason_code")) == (code, reason), resp.text
    assert client.post(url(job_id), json={"reason_codes": "CONTACT_NOT_MAPPED"}, headers=auth).status_code == 422
    assert client.post(url(job_id), json={"other": 1}, headers=auth).status_code == 422
    stamps = {e["_id"]: e["created_at"] for e in cdp[NOTE_LOG].find({"job_id": job_id, "outcome": "failed"})}
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=31)  # past the 30-day retention of the queue
    cdp[NOTE_LOG].update_many({"_id": {"$in": list(stamps)}}, {"$set": {"created_at": old}})
    try:
        resp = client.post(url(job_id), headers=auth)
        assert (resp.status_code, resp.json()["reason_code"]) == (409, "NOTHING_TO_RETRY")
        assert "within 30 days" in resp.json()["detail"]
    finally:
        for _id, stamp in stamps.items():
            cdp[NOTE_LOG].update_one({"_id": _id}, {"$set": {"created_at": stamp}})
    job_store.update_job(cdp, job_id, state="in_progress")  # a job still running
    try:
        resp = client.post(url(job_id), headers=auth)
        assert (resp.status_code, resp.json()["reason_code"]) == (409, "JOB_ALREADY_RUNNING")
    finally:
        cdp[JOBS].replace_one({"_id": job_id}, before[0])
    job_store.acquire_lock(cdp, CID, job_id="other", run_id="other-run", lease_seconds=3600)  # the CID is locked
    try:
        resp = client.post(url(job_id), headers=auth)
        assert (resp.status_code, resp.json()["reason_code"]) == (409, "JOB_ALREADY_RUNNING")
    finally:
        job_store.release_lock(cdp, CID, "other-run")
    assert (cdp[JOBS].find_one({"_id": job_id}), sorted(failed_ids(cdp, job_id))) == before


def test_the_ui_offers_the_retry_button_with_a_nonce_and_no_inline_handler(client, ops_token, failed_job):
    html = client.get(f"{PREFIX}/ui", params={"cid": CID}, headers={"Cookie": f"_token={ops_token}"}).text
    assert f'id="retry-job" data-job-id="{failed_job["job_id"]}"' in html
    assert '<option value="CONTACT_NOT_MAPPED">' in html and '"/retry"' in html and "<script nonce=" in html
    assert "onclick" not in html and "onsubmit" not in html


def test_retry_after_a_backfill_recovers_exactly_the_backfilled_notes(client, auth, failed_job, crm, cdp):
    job_id, company = failed_job["job_id"], failed_job["company_sso_id"]
    status = cid_status(cdp, CID)
    assert status["status"] == "completed_with_errors", status
    failed = failed_ids(cdp, job_id)
    assert status["counts"]["failed"] == {"CONTACT_NOT_MAPPED": len(failed)} and len(failed) >= 4
    person = persons_of(crm, failed)
    unmapped = sorted(set(person.values()))
    backfilled = unmapped[: len(unmapped) // 2]
    assert backfilled and backfill_contacts(cdp, company, backfilled) == len(backfilled)
    expected = {n for n, p in person.items() if p in backfilled}
    migrated = {"company_sso_id": company, "legacy_crm_note_id": {"$exists": True}}
    others_before = {d["legacy_crm_note_id"] for d in cdp[CONTACT_NOTES].find(migrated)}

    resp = client.post(url(job_id), json={"reason_codes": ["CONTACT_NOT_MAPPED"]}, headers=auth)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body["retry"]["recovered_note_ids"]) == expected
    assert body["retry"]["retried"] == len(failed) and body["retry"]["recovered"] == len(expected)
    assert body["retry"]["still_failed_by_reason"] == {"CONTACT_NOT_MAPPED": len(failed) - len(expected)}
    after = {d["legacy_crm_note_id"] for d in cdp[CONTACT_NOTES].find(migrated)}
    assert after - others_before == expected  # exactly the backfilled persons' notes, no other note written
    assert failed_ids(cdp, job_id) == failed - expected
    assert_conserved(crm, cdp, CID, job_id)  # every source row still in exactly one outcome
    st = cid_status(cdp, CID)
    assert st["retry"]["retried"] == len(failed) and st["retry"]["recovered"] == len(expected)
    assert st["counts"]["failed"] == {"CONTACT_NOT_MAPPED": len(failed) - len(expected)}
    assert st["validation"]["match_pct"] > status["validation"]["match_pct"]  # validation re-ran
    with crm.cursor() as cur:  # the recovered notes' files were relinked
        cur.execute("SELECT DISTINCT assetable_id FROM assets WHERE assetable_id = ANY(%s)", (sorted(expected),))
        with_files = {r[0] for r in cur.fetchall()}
    docs = {
        d["legacy_crm_note_id"]: d for d in cdp[CONTACT_NOTES].find({"legacy_crm_note_id": {"$in": sorted(expected)}})
    }
    assert all(docs[n].get("attachments") for n in with_files)

    # the rest of the persons backfilled: a retry of everything empties the queue and the verdict turns success
    assert backfill_contacts(cdp, company, unmapped[len(unmapped) // 2 :]) > 0
    resp = client.post(url(job_id), headers=auth)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "completed_success" and resp.json()["retry"]["recovered"] == len(failed) - len(
        expected
    )
    assert failed_ids(cdp, job_id) == set()
    assert_conserved(crm, cdp, CID, job_id)
    final = cid_status(cdp, CID)
    assert final["status"] == "completed_success" and final["validation"]["match_pct"] == 100.0
    assert final["retry"] == {**final["retry"], "retries": 2, "retried": 2 * len(failed) - len(expected)}
    assert final["retry"]["recovered"] == len(failed)
    resp = client.post(url(job_id), headers=auth)
    assert (resp.status_code, resp.json()["reason_code"]) == (409, "NOTHING_TO_RETRY")


def test_the_ui_shows_the_retries(client, ops_token, failed_job):
    html = client.get(f"{PREFIX}/ui", params={"cid": CID}, headers={"Cookie": f"_token={ops_token}"}).text
    assert "failed-record retries: 2" in html and 'id="retry-job"' not in html  # after the test above: nothing left
