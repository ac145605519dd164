"""One writer per CID under the real scheduler, as Ops overlap their actions: a rollback and a re-run, two
rollbacks, a run marked failed mid-page, a run deleted, a cancel right after the trigger, a dry run that halts.

After each scenario CDP itself is checked, not only the status: each in-scope note is stored at most once (by
legacy id and company), every attachment URL on a stored note names an object that exists in CDP storage, and
the status agrees with what CDP holds.

CIDs: tests/cids.py (7301 rollback races, 7302 marked failed, 7303 deleted run, 7304 cancel at once, 7305 halted
dry run).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from devtools.stack import DAG_ID, PREFIX, Stack, wait_until
from tests.cids import cids

ROLLBACKS, MARKED, DELETED, CANCEL_AT_ONCE, DRY_HALT = cids(__name__)
LANES = 4  # contract.PAGE_LANES: at most this many batches can be past their fence when a run is stopped


def body(cid: int, **extra: Any) -> dict[str, Any]:
    from devtools.seed import company_for

    return {"cid": cid, "company_sso_id": company_for(cid), **extra}


@pytest.fixture(scope="module")
def seeded(seed_cid) -> dict[int, dict]:
    from devtools.seed import SeedSpec

    no_files: dict[str, Any] = {"image_share": 0.0, "audio_share": 0.0, "document_share": 0.0, "upload_files": False}
    specs = [
        SeedSpec(cid=ROLLBACKS, notes=600, image_share=0.3, document_share=0.2, missing_file_share=0.0),
        SeedSpec(cid=MARKED, notes=4000, **no_files),
        SeedSpec(cid=DELETED, notes=4000, **no_files),
        SeedSpec(cid=CANCEL_AT_ONCE, notes=40, **no_files),
        SeedSpec(cid=DRY_HALT, notes=60, unmapped_person_share=0.3, **no_files),
    ]
    return {spec.cid: seed_cid(spec) for spec in specs}


def cdp_holds(cdp, cid: int) -> dict[str, Any]:
    """What CDP holds for the CID's company, checked: no legacy note twice, every attachment URL backed."""
    from devtools.seed import company_for
    from notes_migration.domain import config as C
    from notes_migration.domain.config import Thresholds
    from notes_migration.stores import s3_store as s3

    company = company_for(cid)
    notes = list(
        cdp[C.CONTACT_NOTES].find(
            {"company_sso_id": company, "legacy_crm_note_id": {"$exists": True}},
            {"legacy_crm_note_id": 1, "attachments": 1},
        )
    )
    twice = [n for n, k in Counter(d["legacy_crm_note_id"] for d in notes).items() if k > 1]
    assert not twice, f"CID {cid}: legacy notes stored more than once: {twice[:10]}"
    objects = s3.list_objects(s3.bucket_for(C.CDP_S3_CONN_ID), f"{company}/notes/") or {}
    base = Thresholds().proxy_url_base.rstrip("/") + "/"
    urls = [a["url"] for d in notes for a in d.get("attachments") or [] if a.get("url")]
    dangling = [u for u in urls if u.removeprefix(base) not in objects]
    assert not dangling, f"CID {cid}: {len(dangling)} attachment URLs name no object, e.g. {dangling[:3]}"
    return {"notes": len(notes), "objects": len(objects), "urls": len(urls)}


def agrees(status: dict[str, Any], held: dict[str, Any]) -> None:
    """The status says what CDP holds."""
    if status["status"] == "rolled_back":
        assert held["notes"] == 0, (status, held)
    elif status["status"] == "completed_success":
        assert held["notes"] == status["notes_migrated"] == status["validation"]["found"], (status, held)


def post(stack: Stack, path: str, **kw: Any):
    with stack.client("ops") as c:
        return c.post(f"{PREFIX}{path}", **kw)


def run_over(stack: Stack, run_id: str) -> tuple[bool, str]:
    state = stack.dag_run(run_id)["state"]
    return state in ("success", "failed"), state


def test_a_rollback_and_a_rerun_and_two_rollbacks_never_share_the_cid(local_stack: Stack, seeded, cdp):
    local_stack.set_flag([ROLLBACKS])
    first = local_stack.trigger(body(ROLLBACKS, batch_size=100))
    assert first.status_code == 202, first.text
    assert local_stack.wait_terminal(ROLLBACKS, first.json()["run_id"])["status"] == "completed_success"
    migrated = cdp_holds(cdp, ROLLBACKS)
    assert migrated["urls"] > 0

    # a rollback and, moments later, a re-run of the same CID
    answers: dict[str, Any] = {}
    rollback = threading.Thread(
        target=lambda: answers.update(rollback=post(local_stack, f"/api/cids/{ROLLBACKS}/rollback?dry_run=false"))
    )
    rollback.start()
    time.sleep(0.3)
    answers["trigger"] = local_stack.trigger(body(ROLLBACKS, batch_size=100, force_rerun=True))
    rollback.join(120)
    assert answers["rollback"].status_code in (200, 409), answers["rollback"].text
    if answers["trigger"].status_code == 202:  # accepted: its run either was refused by the lock or ran after
        run_id = answers["trigger"].json()["run_id"]
        wait_until(f"run {run_id} to end", 240, lambda: run_over(local_stack, run_id), 2)
    else:
        assert answers["trigger"].json()["reason_code"] == "JOB_ALREADY_RUNNING", answers["trigger"].text
    status = local_stack.status(ROLLBACKS)
    held = cdp_holds(cdp, ROLLBACKS)
    agrees(status, held)
    print(f"\n[stack] rollback {answers['rollback'].status_code} + trigger {answers['trigger'].status_code}: {held}")

    # whatever that left, migrate the CID so that there is something to roll back, then two rollbacks at once
    if status["status"] != "completed_success":
        again = local_stack.trigger(body(ROLLBACKS, batch_size=100, force_rerun=True))
        assert again.status_code == 202, again.text
        assert local_stack.wait_terminal(ROLLBACKS, again.json()["run_id"])["status"] == "completed_success"
    both: list[Any] = []
    threads = [
        threading.Thread(target=lambda: both.append(post(local_stack, f"/api/cids/{ROLLBACKS}/rollback?dry_run=false")))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    codes = sorted(r.status_code for r in both)
    assert codes[0] == 200 and codes[1] in (404, 409), [r.text for r in both]
    done = next(r.json() for r in both if r.status_code == 200)
    loser = next(r.json() for r in both if r.status_code != 200)
    assert loser["reason_code"] in ("JOB_ALREADY_RUNNING", "NOTHING_TO_ROLL_BACK"), loser
    assert done["rollback"]["notes_deleted"] > 0 and cdp_holds(cdp, ROLLBACKS)["notes"] == 0
    status = local_stack.status(ROLLBACKS)
    assert status["status"] == "rolled_back" and status["rollback"]["rollback_id"] == done["rollback"]["_id"], status
    agrees(status, cdp_holds(cdp, ROLLBACKS))


def _count(cdp, cid: int) -> int:
    from devtools.seed import company_for
    from notes_migration.domain import config as C

    query = {"company_sso_id": company_for(cid), "legacy_crm_note_id": {"$exists": True}}
    return cdp[C.CONTACT_NOTES].count_documents(query)


def _pages_under_way(stack: Stack, cid: int, run_id: str):
    def probe() -> tuple[bool, dict]:
        st = stack.status(cid)
        return st.get("run_id") == run_id and st["status"] == "in_progress" and st["counts"]["pages_done"] >= 2, st

    return wait_until(f"run {run_id} of CID {cid} to have pages done", 120, probe, 0.5)


def test_a_run_marked_failed_mid_page_writes_nothing_more(local_stack: Stack, seeded, cdp):
    batch = 50
    local_stack.set_flag([MARKED])
    resp = local_stack.trigger(body(MARKED, batch_size=batch))
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    running = _pages_under_way(local_stack, MARKED, run_id)
    assert running["counts"]["pages_done"] < running["counts"]["pages_total"], "the CID finished too fast"
    with local_stack.client("admin") as c:
        patched = c.patch(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"})
    assert patched.status_code == 200, patched.text
    at_mark = _count(cdp, MARKED)
    wait_until(f"run {run_id} to be failed", 90, lambda: run_over(local_stack, run_id), 1)
    time.sleep(5)  # what a task still alive would write now
    after = _count(cdp, MARKED)
    # only batches already past their fence when the run was marked may land: one per lane at most
    assert after - at_mark <= LANES * batch, f"{after - at_mark} notes inserted after the run was marked failed"
    status = local_stack.status(MARKED)
    assert (status["status"], status["halted_reason"]) == ("halted", "RUN_FAILED"), status
    cdp_holds(cdp, MARKED)
    print(f"\n[stack] marked failed at {at_mark} notes in CDP, {after} after: {after - at_mark} landed after the mark")


def test_a_failed_run_deleted_is_halted_run_not_found_not_in_progress_forever(local_stack: Stack, seeded, cdp):
    """Airflow deletes only finished runs: a run marked failed mid-page (its job left in progress, the status
    RUN_FAILED), then deleted. The status must stay terminal, with a reason, not fall back to in_progress."""
    batch = 50
    local_stack.set_flag([DELETED])
    resp = local_stack.trigger(body(DELETED, batch_size=batch))
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    _pages_under_way(local_stack, DELETED, run_id)
    with local_stack.client("admin") as c:
        assert c.patch(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"}).status_code == 200
    wait_until(f"run {run_id} to be failed", 90, lambda: run_over(local_stack, run_id), 1)
    assert local_stack.status(DELETED)["halted_reason"] == "RUN_FAILED"
    with local_stack.client("admin") as c:
        deleted = c.delete(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
    assert deleted.status_code == 204, deleted.text
    at_delete = _count(cdp, DELETED)
    status = local_stack.status(DELETED)  # the very next poll
    assert (status["status"], status["halted_reason"]) == ("halted", "RUN_NOT_FOUND"), status
    assert status["airflow_run"]["state"] == "not_found" and "progress_pct" not in status, status
    time.sleep(3)
    assert _count(cdp, DELETED) == at_delete
    assert local_stack.status(DELETED)["halted_reason"] == "RUN_NOT_FOUND"
    cdp_holds(cdp, DELETED)
    print(f"\n[stack] deleted run: {status['detail']}")


def test_a_cancel_right_after_the_trigger_stops_the_run_before_it_writes(local_stack: Stack, seeded, cdp):
    local_stack.set_flag([CANCEL_AT_ONCE])
    resp = local_stack.trigger(body(CANCEL_AT_ONCE))
    assert resp.status_code == 202, resp.text
    job_id, run_id = resp.json()["job_id"], resp.json()["run_id"]
    cancelled = post(local_stack, f"/api/jobs/{job_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["halted_reason"] == "CANCELLED"
    wait_until(f"run {run_id} to end", 90, lambda: run_over(local_stack, run_id), 1)
    status = local_stack.status(CANCEL_AT_ONCE)
    assert (status["status"], status["halted_reason"], status["job_id"]) == ("halted", "CANCELLED", job_id), status
    assert _count(cdp, CANCEL_AT_ONCE) == 0
    assert cdp_holds(cdp, CANCEL_AT_ONCE)["notes"] == 0


def test_a_dry_run_that_halts_leaves_the_status_alone(local_stack: Stack, seeded, cdp):
    local_stack.set_flag([DRY_HALT])
    assert local_stack.status(DRY_HALT)["status"] == "not_started"
    resp = local_stack.trigger(body(DRY_HALT, dry_run=True))
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    assert wait_until(f"dry run {run_id} to end", 90, lambda: run_over(local_stack, run_id), 1) == "failed"
    status = local_stack.status(DRY_HALT)
    assert status["status"] == "not_started" and "latest_run" not in status, status
    with local_stack.client("ops") as c:
        dry = c.get(f"{PREFIX}/api/status", params={"cid": DRY_HALT, "dry_run": "true"}).json()
    assert dry["status"] == "halted" and dry["dry_run_report"]["coverage"]["passes_gate"] is False, dry
    assert _count(cdp, DRY_HALT) == 0
