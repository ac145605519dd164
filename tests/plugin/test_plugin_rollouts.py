"""GET /api/rollouts, /api/rollouts/{rollout_id} and /api/weekly (and their Ops-page sections): a rollout's live
progress while its lanes run, then its stored report; the weekly aggregate; authentication like every read
route; bad input refused with a 4xx that writes nothing. Real JWTs, real FerretDB.

The rollout is recorded with the storage functions the rollout DAG's tasks use (plan, a lane's claim and
record, the report), over the real jobs of the `fleet` fixture's runs (conftest.py): a completed CID, a halted
one, one whose run is still going and one not launched yet, plus a flag-off CID (3999, never seeded).
Launching rollouts stays with Airflow (the DAG's trigger form or REST API): its plan task checks the list.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from devtools.seed import company_for
from notes_migration.domain.config import ROLLOUT_CIDS, ROLLOUTS, job_id_for
from notes_migration.domain.contract import ROLLOUT_DAG_ID
from notes_migration.ops import rollout as R
from tests.plugin.plugin_support import (
    HALTED,
    NOT_STARTED,
    PREFIX,
    SUCCESS,
    UNKNOWN_CID,
    WITH_ERRORS,
    add_dag_run,
    set_run_state,
)

ORDER = [SUCCESS, HALTED, UNKNOWN_CID, WITH_ERRORS, NOT_STARTED]
GATE = 0.02


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def save_plan(cdp, name: str, cids: list[int], *, flag_cids: set[int], lanes: int) -> dict[str, Any]:
    """A rollout's plan as its plan task stores it (state running, no report yet)."""
    rid = R.rollout_id_for(f"{name}-{uuid.uuid4().hex}")
    plan = {
        "_id": rid,
        "dag_run_id": f"manual__{rid}",
        "params": {
            "cids_variable": "",
            "max_concurrent": lanes,
            "halt_gate": GATE,
            "batch_size": 20,
            "poke_interval": 2,
        },
        "cids": R.classify([{"cid": c, "company_sso_id": company_for(c)} for c in cids], {}, flag_cids=flag_cids),
        "state": R.RolloutState.RUNNING.value,
        "created_at": now(),
    }
    R.save_plan(cdp, plan)
    return plan


@pytest.fixture(scope="module")
def recorded(fleet, cdp):
    """A rollout in flight: SUCCESS and HALTED finished, WITH_ERRORS running, NOT_STARTED pending, 3999 flag off."""
    plan = save_plan(cdp, "plugin-test", ORDER, flag_cids=set(ORDER) - {UNKNOWN_CID}, lanes=2)
    rid = plan["_id"]
    add_dag_run(ROLLOUT_DAG_ID, plan["dag_run_id"], "running")  # its run, as Airflow knows it while the lanes run
    started = now() - dt.timedelta(seconds=30)
    for lane, cid in enumerate([SUCCESS, HALTED, WITH_ERRORS]):
        run_id = fleet.runs[cid].run_id
        job_id = job_id_for(run_id, cid)
        assert R.claim(cdp, rid, cid, lane=lane % 2, run_id=run_id, job_id=job_id, finished=False, launched_at=started)
        assert not R.claim(cdp, rid, cid, lane=1, run_id=run_id, job_id=job_id)  # a second lane loses the claim
        if cid != WITH_ERRORS:  # as a lane records a run that ended: the outcome from the job's fleet row
            outcome = R.final_state("success", R.job_rows(cdp, [job_id]).get(job_id))
            R.update_cid(
                cdp, rid, cid, finished=True, finished_at=now(), run_state="success", duration_s=30.0, **outcome
            )
    yield {"rollout_id": rid, "plan": plan}
    cdp[ROLLOUTS].delete_one({"_id": rid})
    cdp[ROLLOUT_CIDS].delete_many({"rollout_id": rid})


def get(client, path: str, headers: dict[str, str] | None = None, **params: Any):
    return client.get(f"{PREFIX}{path}", params=params, headers=headers or {})


def test_a_live_rollout_shows_each_cids_decision_progress_and_figures(client, auth, recorded):
    resp = get(client, f"/api/rollouts/{recorded['rollout_id']}", auth)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["rollout_id"], body["state"], body["finished_at"]) == (recorded["rollout_id"], "running", None)
    rows = {r["cid"]: r for r in body["cids"]}
    assert [r["cid"] for r in body["cids"]] == ORDER
    assert (rows[SUCCESS]["progress"], rows[SUCCESS]["state"], rows[SUCCESS]["match_pct"]) == (
        "finished",
        "completed_success",
        100.0,
    )
    assert rows[SUCCESS]["duration_s"] == 30.0 and rows[SUCCESS]["notes_migrated"] > 0
    assert (rows[HALTED]["progress"], rows[HALTED]["state"]) == ("finished", "halted")
    assert rows[HALTED]["halted_reason"] and rows[HALTED]["failure_rate"] > 0.01
    assert rows[WITH_ERRORS]["progress"] == "running" and rows[WITH_ERRORS]["run_id"]
    assert rows[NOT_STARTED] == {
        "cid": NOT_STARTED,
        "company_sso_id": company_for(NOT_STARTED),
        "decision": "launch",
        "progress": "pending",
    }
    assert rows[UNKNOWN_CID]["decision"] == "not_launched_flag_off" and "progress" not in rows[UNKNOWN_CID]
    t = body["totals"]
    assert (t["cids"], t["to_launch"], t["launched"], t["running"], t["pending"], t["finished"]) == (5, 4, 3, 1, 1, 2)
    assert (t["not_launched_flag_off"], t["completed_success"], t["halted"]) == (1, 1, 1)
    assert (t["halt_rate"], t["halt_gate"], t["gate_tripped"]) == (0.5, GATE, True)


def test_the_stored_report_is_what_the_api_shows_after_the_rollout_ends(client, auth, fleet, recorded, cdp):
    rid = recorded["rollout_id"]
    stored = R.get_rollout(cdp, rid)
    assert stored is not None
    job_id = job_id_for(fleet.runs[WITH_ERRORS].run_id, WITH_ERRORS)
    outcome = R.final_state("failed", R.job_rows(cdp, [job_id]).get(job_id))
    R.update_cid(
        cdp, rid, WITH_ERRORS, finished=True, finished_at=now(), run_state="failed", duration_s=41.5, **outcome
    )
    final = R.report_of(cdp, stored, final=True)  # what the report task stores
    R.save_plan(cdp, {**stored, "state": final["state"], "report": final, "finished_at": now()})

    body = get(client, f"/api/rollouts/{rid}", auth).json()
    assert body["state"] == "stopped_at_gate" and body["finished_at"]
    rows = {r["cid"]: r for r in body["cids"]}
    assert rows[NOT_STARTED]["progress"] == "not_launched_halt_gate"
    assert (rows[WITH_ERRORS]["progress"], rows[WITH_ERRORS]["state"]) == ("finished", "completed_with_errors")
    t = body["totals"]
    assert (t["finished"], t["not_launched_halt_gate"], t["completed_with_errors"], t["running"]) == (3, 1, 1, 0)
    assert t["halt_rate"] == round(1 / 3, 6) and t["mean_duration_s"] == round((30 + 30 + 41.5) / 3, 2)

    # the stored report is read back as stored: a later change of a CID's document does not rewrite history
    R.update_cid(cdp, rid, SUCCESS, duration_s=999.0)
    assert get(client, f"/api/rollouts/{rid}", auth).json()["totals"] == t

    listed = get(client, "/api/rollouts", auth).json()["rollouts"]
    [row] = [r for r in listed if r["rollout_id"] == rid]
    assert (row["state"], row["totals"]) == ("stopped_at_gate", t)
    assert set(row) == {"rollout_id", "dag_run_id", "state", "created_at", "finished_at", "totals"}
    assert len(get(client, "/api/rollouts", auth, limit=1).json()["rollouts"]) == 1


@pytest.mark.parametrize(("airflow_state", "run_state"), [("failed", "failed"), (None, R.RUN_NOT_FOUND)])
def test_a_rollout_whose_run_died_is_never_shown_running(client, auth, fleet, cdp, airflow_state, run_state):
    """Its run failed (or was killed, or marked failed), or Airflow does not have it (a rollout recorded by
    another Airflow): the rollout never writes its report, so the view says run_failed, with the reason."""
    plan = save_plan(cdp, "dead", [SUCCESS, NOT_STARTED], flag_cids={SUCCESS, NOT_STARTED}, lanes=1)
    rid = plan["_id"]
    run_id = fleet.runs[SUCCESS].run_id  # launched by a lane that died before recording the end
    assert R.claim(cdp, rid, SUCCESS, lane=0, run_id=run_id, job_id=job_id_for(run_id, SUCCESS), finished=False)
    try:
        if airflow_state:
            add_dag_run(ROLLOUT_DAG_ID, plan["dag_run_id"], "running")
            assert get(client, f"/api/rollouts/{rid}", auth).json()["state"] == "running"  # alive: live progress
            set_run_state(plan["dag_run_id"], airflow_state)  # the run dies before its report task
        body = get(client, f"/api/rollouts/{rid}", auth).json()
        assert (body["state"], body["reason_code"], body["run_state"]) == ("run_failed", "RUN_FAILED", run_state)
        assert {c["cid"]: c["progress"] for c in body["cids"]} == {SUCCESS: "lane_lost", NOT_STARTED: "not_launched"}
        assert (body["totals"]["running"], body["totals"]["lane_lost"], body["totals"]["launched"]) == (0, 1, 1)
        listed = {r["rollout_id"]: r for r in get(client, "/api/rollouts", auth).json()["rollouts"]}
        assert listed[rid]["state"] == "run_failed"
        assert cdp[ROLLOUTS].find_one({"_id": rid}).get("report") is None  # the view writes nothing
    finally:
        cdp[ROLLOUTS].delete_one({"_id": rid})
        cdp[ROLLOUT_CIDS].delete_many({"rollout_id": rid})


def test_the_weekly_aggregate_counts_the_week_and_is_listed(client, auth, fleet, cdp):
    doc = R.save_weekly(cdp, now() + dt.timedelta(seconds=1))  # what crm_notes_weekly_report stores
    weeks = get(client, "/api/weekly", auth).json()["weeks"]
    [week] = [w for w in weeks if w["week"] == doc["week"]]
    assert {SUCCESS, HALTED, WITH_ERRORS} <= set(week["cids"])
    assert week["cids_completed"] >= 1 and week["cids_halted"] >= 1 and week["cids_completed_with_errors"] >= 1
    assert 0 < week["halt_rate"] < 1 and week["jobs_ended"] >= 3
    assert week["window_start"] < week["window_end"]
    assert len(get(client, "/api/weekly", auth, limit=1).json()["weeks"]) == 1


def test_the_ops_page_shows_the_rollout_and_the_week(client, ops_token, recorded):
    html = client.get(f"{PREFIX}/ui", headers={"Cookie": f"_token={ops_token}"}).text
    assert f'<a href="api/rollouts/{recorded["rollout_id"]}">{recorded["rollout_id"]}</a>' in html
    assert '<table class="weekly">' in html and '<table class="rollouts">' in html


def test_rollout_routes_need_a_valid_token_and_accept_a_viewer_or_the_ui_cookie(
    client, ops_token, viewer_token, recorded
):
    paths = ["/api/rollouts", f"/api/rollouts/{recorded['rollout_id']}", "/api/weekly"]
    for path in paths:
        assert get(client, path).status_code == 401, path  # anonymous
        assert get(client, path, {"Authorization": "Bearer not-a-jwt"}).status_code == 401, path
        for headers in ({"Authorization": f"Bearer {viewer_token}"}, {"Cookie": f"_token={ops_token}"}):
            assert get(client, path, headers).status_code == 200, (path, headers)


@pytest.mark.parametrize(
    "path, params, code, reason",
    [
        ("/api/rollouts/ro-0000000000000000", {}, 404, "ROLLOUT_NOT_FOUND"),
        ("/api/rollouts/" + "x" * 65, {}, 422, None),
        ("/api/rollouts", {"limit": 0}, 422, None),
        ("/api/rollouts", {"limit": 501}, 422, None),
        ("/api/rollouts", {"limit": "many"}, 422, None),
        ("/api/weekly", {"limit": 0}, 422, None),
        ("/api/weekly", {"limit": 521}, 422, None),
    ],
)
def test_bad_input_is_refused_with_a_4xx_and_writes_nothing(client, auth, recorded, cdp, path, params, code, reason):
    before = (R.get_rollout(cdp, recorded["rollout_id"]), R.cid_docs(cdp, recorded["rollout_id"]))
    resp = get(client, path, auth, **params)
    assert resp.status_code == code, resp.text
    if reason:
        assert resp.json()["reason_code"] == reason
    else:
        assert resp.json()["detail"]  # FastAPI's validation error names the parameter
    assert (R.get_rollout(cdp, recorded["rollout_id"]), R.cid_docs(cdp, recorded["rollout_id"])) == before
    assert cdp[ROLLOUTS].count_documents({"_id": "ro-0000000000000000"}) == 0
