"""CID runs under a real scheduler (LocalExecutor), triggered through the plugin's POST /api/jobs with a
real JWT and watched through GET /api/status, as Ops would.

CIDs: 100 (the demo CID, reseeded), 7001 (flag off), 7002 (coverage below the gate), 7099 (never seeded).
CID 100 and 7002 are triggered together and run side by side (LocalExecutor, parallel tasks).
"""

from __future__ import annotations

import pytest

from devtools.stack import DAG_ID, Stack
from tests.cids import cids

FLAG_OFF, LOW_COVERAGE, UNKNOWN = cids(__name__)


def body(cid: int, **extra) -> dict:
    from devtools.seed import company_for

    return {"cid": cid, "company_sso_id": company_for(cid), **extra}


@pytest.fixture(scope="module")
def seeded(seed_cid):
    from devtools.seed import DEMO_SPECS, SeedSpec

    [demo_100] = [s for s in DEMO_SPECS if s.cid == 100]
    specs = [
        demo_100,
        SeedSpec(cid=FLAG_OFF, notes=20),
        SeedSpec(cid=LOW_COVERAGE, notes=200, unmapped_person_share=0.2),
    ]
    return {spec.cid: seed_cid(spec) for spec in specs}


def httpx_get(stack: Stack, path: str):
    import httpx

    return httpx.get(f"{stack.base_url}{path}", timeout=30)


def test_a_fresh_stack_is_healthy_unpaused_and_loaded_from_airflow_settings(local_stack: Stack):
    with local_stack.client("admin") as c:
        health = c.get("/api/v2/monitor/health").json()
        dag = c.get(f"/api/v2/dags/{DAG_ID}").json()
        conns = {x["connection_id"] for x in c.get("/api/v2/connections", params={"limit": 100}).json()["connections"]}
        flag = c.get("/api/v2/variables/crm_notes_migration_enabled").json()
        anonymous = httpx_get(local_stack, f"/api/v2/dags/{DAG_ID}")
    assert {k: v["status"] for k, v in health.items()} == {
        "metadatabase": "healthy",
        "scheduler": "healthy",
        "triggerer": "healthy",
        "dag_processor": "healthy",
    }
    assert dag["is_paused"] is False
    assert {"crm_postgres", "cdp_mongo", "crm_s3", "cdp_s3", "slack_alerts", "pagerduty_events"} <= conns
    assert flag["value"] == "[100, 5000]"
    assert anonymous.status_code == 401


@pytest.fixture(scope="module")
def triggered(seeded, stacks) -> dict[int, str]:
    """CID 100 and the low-coverage CID triggered together (the scheduler runs them side by side): run ids."""
    stack = stacks.get("local")
    stack.set_flag([100, LOW_COVERAGE])
    run_ids = {}
    for cid in (100, LOW_COVERAGE):
        resp = stack.trigger(body(cid))
        assert resp.status_code == 202, resp.text
        assert resp.json()["dag_paused"] is False
        run_ids[cid] = resp.json()["run_id"]
    return run_ids


def test_demo_cid_completes_successfully(local_stack: Stack, triggered):
    run_id = triggered[100]
    status = local_stack.wait_terminal(100, run_id)
    assert status["status"] == "completed_success", status
    assert status["notes_migrated"] == status["validation"]["expected"] == status["validation"]["found"] > 0
    assert status["counts"]["migrated"] == status["notes_migrated"]  # reseeded: every note written by this run
    assert status["validation"]["match_pct"] == 100.0 and status["validation"]["content_mismatches"] == 0
    assert status["triggered_by"] == "ops"
    assert status["_dag_run_state"] == "success"
    pages = local_stack.task_instances(run_id, "migrate_page")
    assert pages and {ti["state"] for ti in pages} == {"success"}


def test_low_coverage_halts_before_any_write(local_stack: Stack, triggered, seeded, cdp):
    from notes_migration.domain.codes import Reason

    status = local_stack.wait_terminal(LOW_COVERAGE, triggered[LOW_COVERAGE])
    assert status["status"] == "halted" and status["halted_reason"] == Reason.COVERAGE_BELOW_GATE, status
    assert status["coverage"]["coverage_pct"] < 99
    assert status["_dag_run_state"] == "failed"  # finalise fails a run that did not succeed
    written = {"company_sso_id": seeded[LOW_COVERAGE]["company_sso_id"], "legacy_crm_note_id": {"$exists": True}}
    assert cdp.contact_notes.count_documents(written) == 0


def test_refusals_write_nothing(local_stack: Stack, seeded, triggered):
    from notes_migration.domain.codes import Reason

    assert local_stack.wait_terminal(100, triggered[100])["status"] == "completed_success"
    local_stack.set_flag([100, LOW_COVERAGE, UNKNOWN])
    runs_before = len(local_stack.dag_runs())

    off = local_stack.trigger(body(FLAG_OFF))
    assert (off.status_code, off.json()["reason_code"]) == (403, Reason.FLAG_DISABLED)
    unknown = local_stack.trigger(body(UNKNOWN))
    assert (unknown.status_code, unknown.json()["reason_code"]) == (404, Reason.CID_NOT_FOUND)
    again = local_stack.trigger(body(100))
    assert (again.status_code, again.json()["reason_code"]) == (409, Reason.ALREADY_MIGRATED)

    assert len(local_stack.dag_runs()) == runs_before
    assert local_stack.status(FLAG_OFF)["status"] == "not_started"
