"""POST /api/jobs: validates synchronously, creates the DAG run through Airflow, and writes nothing when it refuses."""

from __future__ import annotations

import json

import pytest
from airflow.utils.types import DagRunTriggeredByType

from devtools.seed import SeedSpec
from notes_migration.domain.codes import Reason
from notes_migration.domain.config import job_id_for
from notes_migration.stores import job_store
from tests.cids import cids
from tests.plugin.plugin_support import PREFIX, SUCCESS, UNKNOWN_CID, dag_runs_of

FRESH, LOCKED = cids(__name__)
URL = f"{PREFIX}/api/jobs"


@pytest.fixture
def flag(monkeypatch):
    def _set(*cids: int) -> None:
        monkeypatch.setenv("AIRFLOW_VAR_CRM_NOTES_MIGRATION_ENABLED", json.dumps(list(cids)))

    return _set


@pytest.fixture(scope="module")
def fresh(seed_cid, dag_in_db):
    return seed_cid(SeedSpec(cid=FRESH, notes=20))


def snapshot(cdp, cid: int) -> tuple:
    """What a refusal must leave untouched: the CID's DAG runs, job records and lock."""

    return (sorted(r.run_id for r in dag_runs_of(cid)), job_store.count_jobs(cdp, cid), job_store.get_lock(cdp, cid))


def body(cid: int, company: str, **extra) -> dict:
    return {"cid": cid, "company_sso_id": company, **extra}


def test_202_creates_a_queued_manual_run_with_the_conf(client, auth, flag, fresh, cdp):
    flag(FRESH)
    before = snapshot(cdp, FRESH)
    resp = client.post(URL, json=body(FRESH, fresh["company_sso_id"], batch_size=10), headers=auth)
    assert resp.status_code == 202, resp.text
    out = resp.json()
    runs = dag_runs_of(FRESH)
    assert [r.run_id for r in runs] == [out["run_id"]]
    run = runs[0]
    assert run.conf == {
        "cid": FRESH,
        "company_sso_id": fresh["company_sso_id"],
        "batch_size": 10,
        "include_activities": False,
        "dry_run": False,
        "force_rerun": False,
    }
    assert str(run.state) == "queued" and str(run.run_type) == "manual"
    assert run.triggering_user_name == "ops" and run.triggered_by == DagRunTriggeredByType.REST_API
    assert out["job_id"] == job_id_for(run.run_id, FRESH)
    assert out["state"] == "queued" and out["dag_id"] == "crm_notes_migration"
    assert resp.headers["location"] == out["status_url"] == f"{PREFIX}/api/status?cid={FRESH}"
    assert out["airflow_run_url"].startswith("/dags/crm_notes_migration/runs/")
    # the run has not started: no job record or lock yet (the DAG's first task writes those)
    assert snapshot(cdp, FRESH)[1:] == before[1:]


def test_409_while_a_run_of_the_cid_is_queued(client, auth, flag, fresh, cdp):
    flag(FRESH)
    if not dag_runs_of(FRESH):
        assert client.post(URL, json=body(FRESH, fresh["company_sso_id"]), headers=auth).status_code == 202
    before = snapshot(cdp, FRESH)
    resp = client.post(URL, json=body(FRESH, fresh["company_sso_id"]), headers=auth)
    assert resp.status_code == 409
    assert resp.json()["reason_code"] == Reason.JOB_ALREADY_RUNNING
    assert snapshot(cdp, FRESH) == before


def test_409_while_a_run_holds_the_cid_lock(client, auth, flag, seed_cid, cdp, dag_in_db):

    seeded = seed_cid(SeedSpec(cid=LOCKED, notes=10))
    job_store.acquire_lock(cdp, LOCKED, job_id="held-by-test", run_id="manual__held", lease_seconds=3600)
    try:
        flag(LOCKED)
        before = snapshot(cdp, LOCKED)
        resp = client.post(URL, json=body(LOCKED, seeded["company_sso_id"]), headers=auth)
        assert resp.status_code == 409
        assert resp.json()["reason_code"] == Reason.JOB_ALREADY_RUNNING
        assert "held-by-test" in resp.json()["detail"]
        assert snapshot(cdp, LOCKED) == before
    finally:
        job_store.release_lock(cdp, LOCKED)


def test_403_when_the_flag_is_off(client, auth, flag, fresh, cdp):
    flag(SUCCESS)  # another CID only
    before = snapshot(cdp, FRESH)
    resp = client.post(URL, json=body(FRESH, fresh["company_sso_id"], force_rerun=True), headers=auth)
    assert (resp.status_code, resp.json()["reason_code"]) == (403, Reason.FLAG_DISABLED)
    assert snapshot(cdp, FRESH) == before


def test_404_for_a_cid_the_crm_does_not_know(client, auth, flag, cdp, dag_in_db):
    flag(UNKNOWN_CID)
    before = snapshot(cdp, UNKNOWN_CID)
    resp = client.post(URL, json=body(UNKNOWN_CID, "0f8fad5b-d9cb-469f-a165-70867728950e"), headers=auth)
    assert (resp.status_code, resp.json()["reason_code"]) == (404, Reason.CID_NOT_FOUND)
    assert snapshot(cdp, UNKNOWN_CID) == before == ([], 0, None)


def test_409_for_a_cid_already_migrated_unless_forced(client, auth, flag, fleet, cdp, dag_in_db):
    flag(SUCCESS)
    company = fleet.seeded[SUCCESS]["company_sso_id"]
    before = snapshot(cdp, SUCCESS)
    resp = client.post(URL, json=body(SUCCESS, company), headers=auth)
    assert (resp.status_code, resp.json()["reason_code"]) == (409, Reason.ALREADY_MIGRATED)
    assert snapshot(cdp, SUCCESS) == before
    # a dry run of a completed CID is allowed (it writes no notes)
    dry = client.post(URL, json=body(SUCCESS, company, dry_run=True), headers=auth)
    assert dry.status_code == 202, dry.text


@pytest.mark.parametrize(
    "payload",
    [
        {"company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e"},  # no cid
        {"cid": "3006", "company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e"},  # cid as a string
        {"cid": 3006},  # no company
        {"cid": 3006, "company_sso_id": "not-a-uuid"},
        {"cid": 0, "company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e"},
        {"cid": 3006, "company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "batch_size": 5000},
        {"cid": 3006, "company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "dry_run": "yes"},
        {"cid": 3006, "company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "unknown_option": 1},
        [3006],
    ],
)
def test_422_for_a_malformed_body(client, auth, flag, fresh, cdp, payload):
    flag(FRESH)
    before = snapshot(cdp, FRESH)
    resp = client.post(URL, json=payload, headers=auth)
    assert resp.status_code == 422, resp.text
    assert snapshot(cdp, FRESH) == before


def test_422_for_a_body_that_is_not_json(client, auth, fresh):
    resp = client.post(URL, content=b"cid=3006", headers={**auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 422
