"""Scale-out under a real scheduler with the CeleryExecutor: Redis and two Celery workers (worker-1,
worker-2) run one CID's mapped pages between them.

CID: 7010 (800 notes, ~570 in scope: 12 batches of 50 in 4 task pages, one per page lane, so the
4 task slots of the two workers are all taken at once).

A rollout with more lanes (6) than the workers have task slots (4) completes: its lanes wait deferred in the
triggerer while their CIDs' migrations run, holding no Celery worker process. CIDs 7011–7016.
"""

from __future__ import annotations

import time
from typing import Any

from devtools.stack import Stack, wait_until
from tests.cids import cids

CID, *LANE_CIDS = cids(__name__)


def test_the_page_tasks_of_one_cid_run_on_both_celery_workers(celery_stack: Stack, seed_cid):
    """The mapped page tasks (notes and relinks) of one run go to both workers. Which worker a given task
    lands on is Celery's choice: a 2026-12-06 clean-clone run had all four migrate_page tasks on worker-2
    (pages of 3 small batches can end before the next is queued, and worker-1 took the relinks)."""
    from devtools.seed import SeedSpec

    spec = SeedSpec(cid=CID, notes=800)
    seed_cid(spec)
    celery_stack.set_flag([CID])
    resp = celery_stack.trigger({"cid": CID, "company_sso_id": spec.company_sso_id, "batch_size": 50})
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]

    status = celery_stack.wait_terminal(CID, run_id)
    assert status["status"] == "completed_success", status
    assert status["_dag_run_state"] == "success"

    pages = celery_stack.task_instances(run_id, "migrate_page")
    relinks = celery_stack.task_instances(run_id, "relink_attachments")
    assert len(pages) == len(relinks) == 4 and {ti["state"] for ti in pages + relinks} == {"success"}
    hosts = {ti["hostname"] for ti in pages + relinks}
    ran = sorted((ti["task_id"], ti["map_index"], ti["hostname"]) for ti in pages + relinks)
    print(f"\n[stack] page task hostnames: {ran}")
    assert hosts == {"worker-1", "worker-2"}, f"page tasks ran on {hosts}"


def test_a_rollout_with_more_lanes_than_worker_slots_completes_its_lanes_deferred(celery_stack: Stack, seed_cid):
    from devtools.seed import SeedSpec, company_for
    from notes_migration.ops.rollout import rollout_id_for

    for cid in LANE_CIDS:
        seed_cid(SeedSpec(cid=cid, notes=150, image_share=0.0, audio_share=0.0, document_share=0.0))
    celery_stack.set_flag(LANE_CIDS)
    conf = {
        "cids": [{"cid": c, "company_sso_id": company_for(c)} for c in LANE_CIDS],
        "max_concurrent": len(LANE_CIDS),  # 6 lanes, 4 worker slots
        "poke_interval": 2,
    }
    with celery_stack.client("ops") as c:
        resp = c.post("/api/v2/dags/crm_notes_rollout/dagRuns", json={"logical_date": None, "conf": conf})
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]
    lanes_path = f"/api/v2/dags/crm_notes_rollout/dagRuns/{run_id}/taskInstances/run_lane/listMapped"

    seen: list[tuple[int, list[str]]] = []

    def two_running_with_lanes_deferred() -> tuple[bool, Any]:
        with celery_stack.client("admin") as c:
            lanes = [t["state"] for t in c.get(lanes_path).json()["task_instances"]]
            runs = c.get("/api/v2/dags/crm_notes_migration/dagRuns", params={"state": "running", "limit": 100})
        running = [r for r in runs.json()["dag_runs"] if r["dag_run_id"].startswith(f"{rollout_id_for(run_id)}__")]
        seen.append((len(running), lanes))
        busy_lanes = [s for s in lanes if s not in ("deferred", "success", "scheduled", "queued")]
        return len(running) >= 2 and lanes.count("deferred") >= 2 and not busy_lanes, (len(running), lanes)

    wait_until("two migrations running while the lanes wait deferred", 300, two_running_with_lanes_deferred, 1)
    print(f"\n[stack] lanes while migrations ran: {seen[-1]}")

    def done() -> tuple[bool, Any]:
        with celery_stack.client("admin") as c:
            state = c.get(f"/api/v2/dags/crm_notes_rollout/dagRuns/{run_id}").json()["state"]
        return state in ("success", "failed"), state

    started = time.monotonic()
    assert wait_until(f"rollout {run_id} to end", 600, done, 3) == "success"
    with celery_stack.client("ops") as c:
        report = c.get(f"/crm-notes-migration/api/rollouts/{rollout_id_for(run_id)}").json()
    assert report["totals"]["completed_success"] == len(LANE_CIDS), report["totals"]
    print(
        f"[stack] rollout of {len(LANE_CIDS)} CIDs on 6 lanes / 4 slots ended {time.monotonic() - started:.0f} s later"
    )
