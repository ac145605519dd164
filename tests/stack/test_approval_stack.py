"""A pilot rollout with CSM approvals under the real scheduler (LocalExecutor), answered as Ops would: through
Airflow's REST API (`PATCH …/taskInstances/approve_cid/{map_index}/hitlDetails`) with a real JWT.

Four CIDs, stage `pilot`, one human-in-the-loop request each (the mapped `approve_cid`, map index = list
position): the first is approved with a window already open and migrates at once; the second is approved
with a window opening 40 s later and its run is not created before it; the third is rejected (CSM_REJECTED);
the fourth is left unanswered until its short timeout (APPROVAL_EXPIRED). Nothing of the last two is written
to CDP. The rollout report (plugin) and the status JSON (`approval`) show who approved, when, the window and
the reference. A rollout killed by Ops (its run marked failed) is shown failed at the Ops view's next load.
CIDs: 9600–9604.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import httpx
import pytest

from devtools.stack import DAG_ID, PREFIX, Stack, wait_until
from tests.cids import cids
from tests.stack.rollout_support import NO_FILES, entry

ROLLOUT_DAG_ID = "crm_notes_rollout"
NOW_OPEN, LATER, REJECTED, EXPIRED, KILLED = cids(__name__)
ORDER = [NOW_OPEN, LATER, REJECTED, EXPIRED]
TIMEOUT_S = 90  # the requests' timeout: the unanswered one expires after it, the others are answered well before
WINDOW_DELAY_S = 40  # the first CID must be launched before it: lanes wake every poke_interval (2 s) + scheduling


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@pytest.fixture(scope="module")
def seeded(seed_cid) -> dict[int, dict]:
    from devtools.seed import SeedSpec

    return {
        cid: seed_cid(SeedSpec(cid=cid, notes=8, ambiguous_contact_share=0.0, **NO_FILES)) for cid in [*ORDER, KILLED]
    }


def test_a_pilot_rollout_migrates_only_approved_cids_inside_their_windows(local_stack: Stack, seeded, cdp):
    from notes_migration.domain.config import CONTACT_NOTES
    from notes_migration.ops.rollout import migration_run_id, rollout_id_for
    from notes_migration.stores import job_store

    started = time.monotonic()
    local_stack.set_flag(ORDER)
    conf = {
        "cids": [entry(c) for c in ORDER],
        "stage": "pilot",
        "max_concurrent": 2,
        "poke_interval": 2,
        "approval_timeout_s": TIMEOUT_S,
    }
    with local_stack.client("ops") as c:
        resp = c.post(f"/api/v2/dags/{ROLLOUT_DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]
    rid = rollout_id_for(run_id)
    ti_path = f"/api/v2/dags/{ROLLOUT_DAG_ID}/dagRuns/{run_id}/taskInstances/approve_cid"

    def all_asked() -> tuple[bool, Any]:
        try:
            with local_stack.client("ops") as c:
                states = [c.get(f"{ti_path}/{i}").json().get("state") for i in range(len(ORDER))]
        except httpx.TimeoutException as exc:  # a busy 2-core machine: ask again
            return False, repr(exc)
        return all(s == "awaiting_input" for s in states), states

    wait_until("the four approval requests to wait for input", 240, all_asked, 2)
    with local_stack.client("ops") as c:
        detail = c.get(f"{ti_path}/0/hitlDetails")
    assert detail.status_code == 200, detail.text
    request = detail.json()
    assert request["options"] == ["Approve", "Reject"] and str(NOW_OPEN) in request["subject"]
    body = request["body"]
    assert "notes in scope: " in body and "could not be computed" not in body and "**Dry run**" in body, body
    assert "coverage: 100.0 %" in body, body  # the preflight ran against the CRM and CDP
    assert {"window_start", "window_end", "reference"} <= set(request["params"])

    # no lane launched anything while every request was open (pilot: no approval, no run)
    assert not [r for r in runs_of(local_stack, rid)], "a CID was launched before its approval"

    now = dt.datetime.now(dt.UTC)
    later_start = (now + dt.timedelta(seconds=WINDOW_DELAY_S)).replace(microsecond=0)  # as iso() sends it
    answers = {
        0: ("Approve", now - dt.timedelta(minutes=1), now + dt.timedelta(hours=1), "CSM-1"),
        1: ("Approve", later_start, now + dt.timedelta(hours=1), "CSM-2"),
        2: ("Reject", None, None, "CSM-3"),
    }
    with local_stack.client("ops") as c:
        for index, (option, start, end, ref) in answers.items():
            body = {
                "chosen_options": [option],
                "params_input": {
                    "window_start": iso(start) if start else None,
                    "window_end": iso(end) if end else None,
                    "reference": ref,
                },
            }
            resp = c.patch(f"{ti_path}/{index}/hitlDetails", json=body)
            assert resp.status_code == 200, resp.text
    answered = dt.datetime.now(dt.UTC)

    def rollout_done() -> tuple[bool, Any]:
        with local_stack.client("admin") as c:
            state = c.get(f"/api/v2/dags/{ROLLOUT_DAG_ID}/dagRuns/{run_id}").json()["state"]
        return state in ("success", "failed"), state

    run_state = wait_until(f"rollout run {run_id} to end", 420, rollout_done, 3)
    elapsed = time.monotonic() - started
    print(f"\n[approval] pilot of {len(ORDER)} CIDs ended {run_state} in {elapsed:.0f} s (seed excluded)")
    if run_state != "success":
        explain_failure(local_stack, run_id)
    assert run_state == "success"

    runs = {r["dag_run_id"]: r for r in runs_of(local_stack, rid)}
    assert set(runs) == {migration_run_id(rid, NOW_OPEN), migration_run_id(rid, LATER)}, sorted(runs)
    first, second = runs[migration_run_id(rid, NOW_OPEN)], runs[migration_run_id(rid, LATER)]
    first_queued, second_queued = when(first["queued_at"]), when(second["queued_at"])
    assert first_queued and second_queued
    assert first_queued < later_start, (first_queued, later_start)  # at once, not held by the other's window
    assert second_queued >= later_start, (second_queued, later_start)  # no earlier than its window_start
    print(
        f"[approval] first run queued {(first_queued - answered).total_seconds():.1f} s after the answers; "
        f"second {(second_queued - later_start).total_seconds():.1f} s after its window opened"
    )

    for cid in (REJECTED, EXPIRED):  # no note written, no job, no run
        assert job_store.latest_job(cdp, cid) is None
        migrated = {"company_sso_id": entry(cid)["company_sso_id"], "legacy_crm_note_id": {"$exists": True}}
        assert cdp[CONTACT_NOTES].count_documents(migrated) == 0  # the company's own CDP notes are the seed's

    with local_stack.client("ops") as c:
        report = c.get(f"{PREFIX}/api/rollouts/{rid}").json()
        status = {cid: c.get(f"{PREFIX}/api/status", params={"cid": cid}).json() for cid in [*ORDER, KILLED]}
    assert report["state"] == "completed", report
    rows = {r["cid"]: r for r in report["cids"]}
    for cid, ref in ((NOW_OPEN, "CSM-1"), (LATER, "CSM-2")):
        row = rows[cid]
        assert (row["progress"], row["state"]) == ("finished", "completed_success"), row
        approval = row["approval"]
        assert (approval["state"], approval["reference"], approval["by"]["name"]) == ("approved", ref, "ops"), row
        assert approval["window_start"] and approval["window_end"] and approval["at"]
        assert status[cid]["status"] == "completed_success"
        assert status[cid]["approval"]["reference"] == ref and status[cid]["approval"]["by"]["name"] == "ops"
    assert (rows[REJECTED]["progress"], rows[REJECTED]["outcome"]) == ("not_launched_approval", "CSM_REJECTED")
    assert rows[REJECTED]["approval"]["state"] == "rejected" and rows[REJECTED]["approval"]["reference"] == "CSM-3"
    assert (rows[EXPIRED]["progress"], rows[EXPIRED]["outcome"]) == ("not_launched_approval", "APPROVAL_EXPIRED")
    assert rows[EXPIRED]["approval"]["state"] == "expired"
    assert status[REJECTED]["status"] == "not_started" and status[REJECTED]["approval"]["state"] == "rejected"
    assert status[EXPIRED]["approval"]["state"] == "expired"
    totals = report["totals"]
    assert (totals["CSM_REJECTED"], totals["APPROVAL_EXPIRED"], totals["halted"], totals["completed_success"]) == (
        1,
        1,
        0,
        2,
    )
    assert totals["stage"] == "pilot" and totals["stopped_by"] is None and totals["halt_rate"] == 0


def runs_of(stack: Stack, rid: str) -> list[dict[str, Any]]:
    with stack.client("admin") as c:
        resp = c.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100})
    assert resp.status_code == 200, resp.text
    return [r for r in resp.json()["dag_runs"] if r["dag_run_id"].startswith(f"{rid}__")]


def explain_failure(stack: Stack, run_id: str) -> None:
    """Print the rollout run's task states and the tail of each failed task's log (the stack is gone after)."""
    base = f"/api/v2/dags/{ROLLOUT_DAG_ID}/dagRuns/{run_id}/taskInstances"
    with stack.client("admin") as c:
        tis = c.get(base, params={"limit": 100}).json()["task_instances"]
        for ti in tis:
            print(f"[approval] {ti['task_id']}[{ti['map_index']}] {ti['state']} try {ti['try_number']}")
            if ti["state"] == "failed":
                for attempt in range(1, ti["try_number"] + 1):
                    log = c.get(
                        f"{base}/{ti['task_id']}/logs/{attempt}",
                        params={"map_index": ti["map_index"], "full_content": True},
                        headers={"Accept": "application/json"},
                    )
                    lines = [e for e in (log.json().get("content") or []) if isinstance(e, dict)]
                    for e in lines:
                        if e.get("level") in ("error", "warning") or e.get("error_detail"):
                            print(f"  try {attempt}: {e.get('event')} {str(e.get('error_detail') or '')[-2500:]}")


def test_a_killed_rollout_shows_failed_in_the_ops_view_at_the_next_poll(local_stack: Stack, seeded):
    """A rollout run killed by Ops (marked failed through the REST API while its approval waits): the Ops view's
    very next load shows it run_failed with its Airflow state, never `running`."""
    from notes_migration.ops.rollout import rollout_id_for

    local_stack.set_flag([KILLED])
    conf = {"cids": [entry(KILLED)], "stage": "pilot", "poke_interval": 2, "approval_timeout_s": 3600}
    with local_stack.client("ops") as c:
        resp = c.post(f"/api/v2/dags/{ROLLOUT_DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]
    rid = rollout_id_for(run_id)
    path = f"/api/v2/dags/{ROLLOUT_DAG_ID}/dagRuns/{run_id}"

    def asked() -> tuple[bool, Any]:
        with local_stack.client("ops") as c:
            state = c.get(f"{path}/taskInstances/approve_cid/0").json().get("state")
        return state == "awaiting_input", state

    wait_until("the approval request to wait for input", 240, asked, 2)
    with local_stack.client("ops") as c:
        live = c.get(f"{PREFIX}/api/rollouts/{rid}").json()
        assert live["state"] == "running", live
        killed = c.patch(path, json={"state": "failed"})
        assert killed.status_code == 200, killed.text
        page = c.get(f"{PREFIX}/ui")
        view = c.get(f"{PREFIX}/api/rollouts/{rid}").json()
    assert page.status_code == 200, page.text
    row = page.text.split(f">{rid}</a>", 1)[1].split("</tr>", 1)[0]
    assert "run_failed" in row, row
    assert (view["state"], view["reason_code"], view["run_state"]) == ("run_failed", "RUN_FAILED", "failed"), view
