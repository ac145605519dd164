"""Scale-out under a real scheduler with the CeleryExecutor: Redis and two Celery workers (worker-1,
worker-2) run one CID's mapped pages between them.

CID: 7010 (800 notes, ~570 in scope: 12 batches of 50 in 4 task pages, one per page lane, so the
4 task slots of the two workers are all taken at once).
"""

from __future__ import annotations

from devtools.stack import Stack
from tests.cids import cids

[CID] = cids(__name__)


def test_pages_of_one_cid_run_on_both_celery_workers(celery_stack: Stack, seed_cid):
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
    assert len(pages) == 4 and {ti["state"] for ti in pages} == {"success"}
    hosts = {ti["hostname"] for ti in pages}
    print(f"\n[stack] migrate_page hostnames: {sorted((ti['map_index'], ti['hostname']) for ti in pages)}")
    assert hosts == {"worker-1", "worker-2"}, f"pages ran on {hosts}"
