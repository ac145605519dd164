"""A status that never goes silent: when the Airflow run behind a job (or a run triggered for a CID that has
no job yet) fails, is killed or is marked failed, the status endpoint and the fleet say so within one poll of
Airflow knowing it (halted / RUN_FAILED with the run id, its state and the failed tasks); a task process killed
mid-page is retried by Airflow and the run still moves every note exactly once.

CIDs: 7201 (a big CID marked failed mid-run), 7202 (flag off, triggered through Airflow's own REST API),
7203 (a migrate_page task process SIGKILLed).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from devtools.stack import DAG_ID, PREFIX, Stack, wait_until
from tests.cids import cids

MARKED_FAILED, NO_JOB_FLAG_OFF, KILLED_PAGE = cids(__name__)
NO_FILES: dict[str, Any] = {"image_share": 0.0, "audio_share": 0.0, "document_share": 0.0, "upload_files": False}


def body(cid: int, **extra: Any) -> dict[str, Any]:
    from devtools.seed import company_for

    return {"cid": cid, "company_sso_id": company_for(cid), **extra}


@pytest.fixture(scope="module")
def seeded(seed_cid) -> dict[int, dict]:
    from devtools.seed import SeedSpec

    specs = [
        SeedSpec(cid=MARKED_FAILED, notes=4000, **NO_FILES),
        SeedSpec(cid=NO_JOB_FLAG_OFF, notes=20, **NO_FILES),
        SeedSpec(cid=KILLED_PAGE, notes=1200, ambiguous_contact_share=0.0, **NO_FILES),
    ]
    return {spec.cid: seed_cid(spec) for spec in specs}


def fleet_row(stack: Stack, cid: int) -> dict[str, Any] | None:
    with stack.client("ops") as c:
        resp = c.get(f"{PREFIX}/api/jobs")
    assert resp.status_code == 200, resp.text
    return next((r for r in resp.json()["jobs"] if r["cid"] == cid), None)


def run_state(stack: Stack, run_id: str) -> tuple[bool, str]:
    state = stack.dag_run(run_id)["state"]
    return state in ("success", "failed"), state


def test_a_run_marked_failed_mid_job_is_halted_run_failed(local_stack: Stack, seeded):
    from notes_migration.domain.codes import Reason

    local_stack.set_flag([MARKED_FAILED, KILLED_PAGE])
    resp = local_stack.trigger(body(MARKED_FAILED, batch_size=50))
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]

    def pages_under_way() -> tuple[bool, dict]:
        st = local_stack.status(MARKED_FAILED)
        return st.get("run_id") == run_id and st["status"] == "in_progress" and st["counts"]["pages_done"] >= 1, st

    running = wait_until(f"run {run_id} of CID {MARKED_FAILED} to have a page done", 120, pages_under_way, 1)
    assert running["counts"]["pages_done"] < running["counts"]["pages_total"], "the CID finished too fast"

    with local_stack.client("admin") as c:
        patched = c.patch(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"})
    assert patched.status_code == 200, patched.text
    # the run's pending teardown (release_lock) may keep it open a moment; then Airflow calls it failed
    assert wait_until(
        f"Airflow run {run_id} to be failed after the PATCH", 90, lambda: run_state(local_stack, run_id)
    ) == ("failed")

    status = local_stack.status(MARKED_FAILED)  # the very next poll
    assert status["status"] == "halted" and status["halted_reason"] == Reason.RUN_FAILED, status
    assert status["airflow_run"]["run_id"] == run_id and status["airflow_run"]["state"] == "failed", status
    assert status["job_id"] and status["error_log_url"].endswith(f"{status['job_id']}/errors")
    assert "progress_pct" not in status and "eta_seconds" not in status
    row = fleet_row(local_stack, MARKED_FAILED)
    assert row is not None and row["run_id"] == run_id, row
    assert (row["status"], row["halted_reason"]) == ("halted", Reason.RUN_FAILED), row
    print(f"\n[stack] marked failed: {run_id} → {status['detail']}")


def test_a_direct_airflow_trigger_that_fails_preconditions_is_halted_not_not_started(local_stack: Stack, seeded):
    from notes_migration.domain.codes import Reason

    local_stack.set_flag([MARKED_FAILED, KILLED_PAGE])  # NO_JOB_FLAG_OFF is not listed
    assert local_stack.status(NO_JOB_FLAG_OFF)["status"] == "not_started"
    with local_stack.client("admin") as c:
        resp = c.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": body(NO_JOB_FLAG_OFF)})
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]
    assert (
        wait_until(f"Airflow run {run_id} (flag off) to fail", 90, lambda: run_state(local_stack, run_id)) == "failed"
    )

    status = local_stack.status(NO_JOB_FLAG_OFF)
    assert status["status"] == "halted" and status["halted_reason"] == Reason.RUN_FAILED, status
    assert status["airflow_run"]["run_id"] == run_id and status["airflow_run"]["state"] == "failed", status
    assert "preconditions" in status["airflow_run"]["failed_tasks"], status
    assert "job_id" not in status and "before it recorded a job" in status["detail"]
    assert status["refused_reason"] == Reason.FLAG_DISABLED and "flag is OFF" in status["detail"], status
    print(f"\n[stack] no job: {run_id} → {status['detail']}")


def _task_process(ti_id: str):
    """The task process the LocalExecutor's supervisor forked for this task instance (its title names the TI)."""
    import psutil

    for proc in psutil.process_iter(["pid", "cmdline"]):
        if f"airflow worker -- {ti_id}" in " ".join(proc.info.get("cmdline") or []):
            return proc
    return None


def test_a_killed_page_process_is_retried_and_loses_or_duplicates_nothing(local_stack: Stack, seeded, cdp, crm):
    from notes_migration.domain import config as C
    from notes_migration.stores import crm_source

    local_stack.set_flag([MARKED_FAILED, KILLED_PAGE])
    resp = local_stack.trigger(body(KILLED_PAGE, batch_size=200))
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]

    def a_running_page() -> tuple[bool, Any]:
        running = [ti for ti in local_stack.task_instances(run_id, "migrate_page") if ti["state"] == "running"]
        for ti in running:
            proc = _task_process(ti["id"])
            if proc is not None:
                return True, (ti, proc)
        return False, [ti["map_index"] for ti in running]

    ti, proc = wait_until(f"a running migrate_page task process of run {run_id}", 120, a_running_page, 0.2)
    os.kill(proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    print(f"\n[stack] SIGKILLed pid {proc.pid}: migrate_page[{ti['map_index']}] try {ti['try_number']} of {run_id}")

    seen: list[dict[str, Any]] = []
    status = local_stack.wait_terminal(KILLED_PAGE, run_id, seen=seen)
    assert status["status"] == "completed_success", status
    # while Airflow waited to retry the killed page (retry_delay 30 s), the status said so and stayed in progress
    waits = [s["waiting_for"] for s in seen if s.get("run_id") == run_id and s.get("waiting_for")]
    assert waits and f"migrate_page[{ti['map_index']}]" in waits[0]["tasks"], [s.get("status") for s in seen]
    assert all(s["status"] == "in_progress" for s in seen if s.get("waiting_for"))
    progress = [s["progress_pct"] for s in seen if s.get("run_id") == run_id and "progress_pct" in s]
    assert len(progress) >= 3 and progress == sorted(progress), progress  # never backwards, the retry included
    print(f"[stack] polled {len(seen)} statuses; waiting_for seen {len(waits)} times: {waits[0]['detail']}")
    assert status["_dag_run_state"] == "success"
    [page] = [t for t in local_stack.task_instances(run_id, "migrate_page") if t["map_index"] == ti["map_index"]]
    assert page["state"] == "success" and page["try_number"] > ti["try_number"], page
    print(f"[stack] retried as try {page['try_number']}; run done {time.monotonic() - killed_at:.0f} s after the kill")

    with crm.cursor() as cur:
        cur.execute(
            f"SELECT n.id FROM crm_notes n {crm_source._TYPE_JOIN} "
            f"WHERE n.organization_id = %(cid)s AND n.crm_person_id IS NOT NULL AND NOT {crm_source._ACTIVITY}",
            crm_source._params(KILLED_PAGE),
        )
        in_scope = {r[0] for r in cur.fetchall()}
    company = seeded[KILLED_PAGE]["company_sso_id"]
    docs = list(
        cdp[C.CONTACT_NOTES].find(
            {"company_sso_id": company, "legacy_crm_note_id": {"$exists": True}}, {"legacy_crm_note_id": 1}
        )
    )
    ids = [d["legacy_crm_note_id"] for d in docs]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} notes duplicated"
    assert set(ids) == in_scope, f"lost {len(in_scope - set(ids))}, unexpected {len(set(ids) - in_scope)}"
    assert status["notes_migrated"] == len(in_scope) == status["validation"]["expected"]
