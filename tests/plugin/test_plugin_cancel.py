"""POST /api/jobs/{job_id}/cancel: halts the job (CANCELLED) so later pages write nothing, marks the Airflow run
failed, releases the lock; refusals are reason-coded and write nothing. Real JWTs, real metadata DB, real FerretDB.

CIDs used here: 9040–9041.
"""

from __future__ import annotations

import json

import pytest

from devtools.seed import SeedSpec
from notes_migration.domain.codes import AlreadyHalted, Reason
from notes_migration.domain.config import CONTACT_NOTES, EVENTS, PAGES, RunConfig, Thresholds
from notes_migration.run import batch, coverage, plan, start
from notes_migration.stores import job_store
from tests.cids import cids
from tests.plugin.plugin_support import PREFIX, dag_runs_of

CID = cids(__name__)[0]


def url(job_id: str) -> str:
    return f"{PREFIX}/api/jobs/{job_id}/cancel"


@pytest.fixture(scope="module")
def running_job(seed_cid, client, ops_token, dag_in_db, cdp, crm):
    """A run created through the trigger endpoint, whose first steps ran (job, lock, coverage, pages planned)
    while no page has started: the state a cancel meets while the scheduler works through a run."""
    seeded = seed_cid(SeedSpec(cid=CID, notes=30))
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW_VAR_CRM_NOTES_MIGRATION_ENABLED", json.dumps([CID]))
    body = {"cid": CID, "company_sso_id": seeded["company_sso_id"], "batch_size": 10}
    resp = client.post(f"{PREFIX}/api/jobs", json=body, headers={"Authorization": f"Bearer {ops_token}"})
    mp.undo()
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    cfg = RunConfig.from_params(body, Thresholds())
    job = start.start_job(crm, cdp, cfg, run_id=run_id, triggered_by="ops", flag_cids=[CID])
    coverage.run_coverage(crm, cdp, job["job_id"])
    pages = plan.plan(crm, cdp, job["job_id"])
    assert len(pages) >= 2
    yield {**job, "pages": pages, "company_sso_id": seeded["company_sso_id"]}
    job_store.release_lock(cdp, CID)


def cdp_snapshot(cdp, job_id: str) -> tuple:
    job = job_store.get_job(cdp, job_id)
    return (
        job and (job["state"], job.get("halted"), job.get("updated_at")),
        cdp[EVENTS].count_documents({"job_id": job_id}),
        cdp[PAGES].count_documents({"job_id": job_id}),
        job_store.get_lock(cdp, CID),
    )


def test_anonymous_cookie_only_and_viewer_are_refused_and_nothing_changes(
    client, ops_token, viewer_token, running_job, cdp
):
    job_id = running_job["job_id"]
    before = cdp_snapshot(cdp, job_id)
    assert client.post(url(job_id)).status_code == 401
    assert client.post(url(job_id), headers={"Cookie": f"_token={ops_token}"}).status_code == 401  # no CSRF
    assert client.post(url(job_id), headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
    assert client.post(url(job_id), headers={"Authorization": f"Bearer {viewer_token}"}).status_code == 403
    assert client.get(url(job_id), headers={"Authorization": f"Bearer {ops_token}"}).status_code == 405
    assert cdp_snapshot(cdp, job_id) == before
    assert [str(r.state) for r in dag_runs_of(CID)] == ["queued"]


def test_the_ui_offers_a_nonced_cancel_button_for_a_running_job(client, ops_token, running_job):
    import re

    resp = client.get(f"{PREFIX}/ui", params={"cid": CID}, headers={"Cookie": f"_token={ops_token}"})
    assert resp.status_code == 200
    html = resp.text
    assert f'id="cancel-job" data-job-id="{running_job["job_id"]}"' in html
    assert "Cancel this run" in html and 'type="password" name="token"' in html
    nonce = re.search(r"script-src 'nonce-([^']+)'", resp.headers["content-security-policy"]).group(1)
    scripts = re.findall(r"<script([^>]*)>", html)
    assert scripts and all(f'nonce="{nonce}"' in attrs for attrs in scripts)
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", html)  # no inline event handlers in any tag
    assert '"Authorization": "Bearer " + token' in html and "/cancel" in html


def test_unknown_job_is_404_and_writes_nothing(client, auth, cdp):
    before = cdp[EVENTS].count_documents({})
    resp = client.post(url("no-such-job"), headers=auth)
    assert (resp.status_code, resp.json()["reason_code"]) == (404, Reason.JOB_NOT_FOUND)
    assert cdp[EVENTS].count_documents({"job_id": "no-such-job"}) == 0 and before >= 0


def test_cancel_halts_the_job_stops_the_run_and_releases_the_lock(client, auth, running_job, cdp, crm):
    job_id = running_job["job_id"]
    assert job_store.get_lock(cdp, CID)["run_id"] == running_job["run_id"]
    resp = client.post(url(job_id), headers=auth)
    assert resp.status_code == 202, resp.text  # accepted: a batch already inserting finishes after the answer
    out = resp.json()
    assert (out["status"], out["halted_reason"], out["cancelled_by"]) == ("halted", "CANCELLED", "ops")
    assert out["airflow_run"]["state_before"] == "queued" and out["airflow_run"]["state"] == "failed"
    assert out["lock_released"] is True

    # Airflow: the run is failed (its tasks will not be scheduled)
    [run] = dag_runs_of(CID)
    assert str(run.state) == "failed"
    # CDP: the job halted with CANCELLED, the halt event, no lock
    job = job_store.get_job(cdp, job_id)
    assert (
        job["state"] == "halted" and job["halted"]["reason"] == "CANCELLED" and job["halted"]["cancelled_by"] == "ops"
    )
    assert job_store.get_lock(cdp, CID) is None
    halts = [e for e in job_store.events(cdp, job_id) if e["event"] == "crm_notes_migration_halted"]
    assert [h["properties"]["reason"] for h in halts] == ["CANCELLED"]
    status = client.get(f"{PREFIX}/api/status", params={"cid": CID}, headers=auth).json()
    assert (status["status"], status["halted_reason"]) == ("halted", "CANCELLED")

    # a page that had not started reads and writes nothing
    with pytest.raises(AlreadyHalted):
        batch.migrate_page(crm, cdp, job_id, running_job["pages"][0])
    assert cdp[PAGES].count_documents({"job_id": job_id}) == 0
    migrated = {"company_sso_id": running_job["company_sso_id"], "legacy_crm_note_id": {"$exists": True}}
    assert cdp[CONTACT_NOTES].count_documents(migrated) == 0


def test_cancelling_a_job_that_already_ended_is_409_and_writes_nothing(client, auth, running_job, cdp):
    job_id = running_job["job_id"]
    if job_store.get_job(cdp, job_id)["state"] != "halted":
        assert client.post(url(job_id), headers=auth).status_code == 202
    before = cdp_snapshot(cdp, job_id)
    runs_before = [(r.run_id, str(r.state)) for r in dag_runs_of(CID)]
    resp = client.post(url(job_id), headers=auth)
    assert (resp.status_code, resp.json()["reason_code"]) == (409, Reason.JOB_ALREADY_FINISHED)
    assert "CANCELLED" in resp.json()["detail"]
    assert cdp_snapshot(cdp, job_id) == before
    assert [(r.run_id, str(r.state)) for r in dag_runs_of(CID)] == runs_before
    html = client.get(f"{PREFIX}/ui", params={"cid": CID}, headers=auth).text
    assert "CANCELLED" in html and 'id="cancel-job"' not in html  # no button once the job ended


def test_cancel_at_once_by_the_id_the_trigger_returned(seed_cid, client, ops_token, dag_in_db, cdp, crm):
    """The trigger's job id is cancellable before the run has recorded its job: the cancel leaves a CANCELLED
    record under that id and marks the run failed; the run's preconditions then refuse it and it writes nothing."""
    other = cids(__name__)[1]
    seeded = seed_cid(SeedSpec(cid=other, notes=10))
    auth = {"Authorization": f"Bearer {ops_token}"}
    body = {"cid": other, "company_sso_id": seeded["company_sso_id"]}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_VAR_CRM_NOTES_MIGRATION_ENABLED", json.dumps([other]))
        trigger = client.post(f"{PREFIX}/api/jobs", json=body, headers=auth)
    assert trigger.status_code == 202, trigger.text
    job_id, run_id = trigger.json()["job_id"], trigger.json()["run_id"]
    resp = client.post(url(job_id), headers=auth)
    assert resp.status_code == 202, resp.text
    assert (resp.json()["halted_reason"], resp.json()["airflow_run"]["state"]) == ("CANCELLED", "failed")
    status = client.get(f"{PREFIX}/api/status", params={"cid": other}, headers=auth).json()
    assert (status["status"], status["halted_reason"], status["job_id"]) == ("halted", "CANCELLED", job_id)
    with pytest.raises(Exception) as refused:  # the run's first task, should it still start
        start.start_job(crm, cdp, RunConfig.from_params(body, Thresholds()), run_id=run_id, triggered_by="ops",
                        flag_cids=[other])  # fmt: skip
    assert getattr(refused.value, "reason", None) == Reason.CANCELLED
    assert job_store.get_lock(cdp, other) is None
    assert cdp[CONTACT_NOTES].count_documents({"company_sso_id": seeded["company_sso_id"], "legacy_crm_note_id": {"$exists": True}}) == 0  # fmt: skip
