"""Housekeeping against the real FerretDB: retention by old timestamps, the audit map kept, dead locks released.

CIDs used here: 9000–9019 (job ids prefixed `hk-`).
"""

from __future__ import annotations

import datetime as dt

import pytest

from notes_migration.domain import config as C
from notes_migration.domain.config import Thresholds
from notes_migration.domain.plain import utc_now
from notes_migration.ops import housekeeping
from notes_migration.stores import job_store
from tests.cids import cids

pytestmark = pytest.mark.integration

NOW = utc_now()
DAYS = dt.timedelta(days=1)
OLD, LATEST_OLD, FRESH, ORPHAN = "hk-9001-old", "hk-9001-latest", "hk-9002-fresh", "hk-9003-orphan"
LOCK_CIDS = tuple(cids(__name__)[10:14])  # 9010–9013
ALL_JOBS = (OLD, LATEST_OLD, FRESH, ORPHAN)


def _wipe(db) -> None:
    for coll in (C.JOBS, C.PAGES, C.ATTACHMENT_PAGES, C.PERSON_MAPS, C.EVENTS, C.NOTE_LOG, C.AUDIT):
        db[coll].delete_many({"job_id": {"$in": list(ALL_JOBS)}})
    db[C.JOBS].delete_many({"_id": {"$in": list(ALL_JOBS)}})
    db[C.LOCKS].delete_many({"_id": {"$in": list(LOCK_CIDS)}})


def _job(job_id: str, cid: int, age_days: int) -> dict:
    at = NOW - age_days * DAYS
    return {
        "_id": job_id,
        "cid": cid,
        "company_sso_id": "00000000-0000-4000-8000-000000009001",
        "state": "completed_success",
        "config": {"cid": cid, "dry_run": False},
        "created_at": at,
        "updated_at": at,
    }


def _children(db, job_id: str, cid: int, age_days: int) -> None:
    at = NOW - age_days * DAYS
    db[C.PAGES].insert_one({"_id": f"{job_id}:0", "job_id": job_id, "cid": cid, "page_no": 0, "finished_at": at})
    db[C.ATTACHMENT_PAGES].insert_one(
        {"_id": f"{job_id}:0", "job_id": job_id, "cid": cid, "page_no": 0, "finished_at": at}
    )
    db[C.PERSON_MAPS].insert_one({"_id": f"{job_id}:0", "job_id": job_id, "persons": "1=c1"})
    db[C.EVENTS].insert_one({"_id": f"{job_id}:started:", "job_id": job_id, "cid": cid, "event": "x", "at": at})
    db[C.AUDIT].insert_one(
        {
            "_id": f"{job_id}:0",
            "job_id": job_id,
            "cid": cid,
            "created_at": at,
            "legacy_crm_note_ids": [1],
            "cdp_note_ids": ["n1"],
        }
    )


def _log(db, job_id: str, cid: int, note: int, age_days: int) -> None:
    db[C.NOTE_LOG].insert_one(
        {
            "_id": f"{job_id}:{note}:CONTACT_NOT_MAPPED",
            "job_id": job_id,
            "job_page": f"{job_id}:0",
            "cid": cid,
            "legacy_crm_note_id": note,
            "outcome": "failed",
            "reason_code": "CONTACT_NOT_MAPPED",
            "created_at": NOW - age_days * DAYS,
        }
    )


@pytest.fixture
def seeded(cdp):
    _wipe(cdp)
    # CID 9001: two jobs over a year old; the later one is the CID's latest and decides its status
    cdp[C.JOBS].insert_many([_job(OLD, 9001, 420), _job(LATEST_OLD, 9001, 400), _job(FRESH, 9002, 10)])
    for job_id, cid, age in ((OLD, 9001, 420), (LATEST_OLD, 9001, 400), (FRESH, 9002, 10)):
        _children(cdp, job_id, cid, age)
    _children(cdp, ORPHAN, 9003, 500)  # a job record already gone: its children are orphans
    _log(cdp, FRESH, 9002, 1, 40)  # past the 30 days
    _log(cdp, FRESH, 9002, 2, 5)
    _log(cdp, OLD, 9001, 3, 420)
    yield cdp
    _wipe(cdp)


def _ids(db, coll: str) -> set[str]:
    return {d["_id"] for d in db[coll].find({"job_id": {"$in": list(ALL_JOBS)}}, {"_id": 1})}


def test_purge_removes_what_is_past_retention_and_keeps_the_audit_map(seeded):
    db = seeded
    report = housekeeping.purge_expired(db, Thresholds(), now=NOW)

    assert report["expired_job_ids"].count(OLD) == 1 and LATEST_OLD not in report["expired_job_ids"]
    assert {j["_id"] for j in db[C.JOBS].find({"_id": {"$in": list(ALL_JOBS)}})} == {LATEST_OLD, FRESH}
    for coll in (C.PAGES, C.ATTACHMENT_PAGES, C.PERSON_MAPS):
        assert _ids(db, coll) == {f"{LATEST_OLD}:0", f"{FRESH}:0"}, coll
    assert _ids(db, C.EVENTS) == {f"{LATEST_OLD}:started:", f"{FRESH}:started:"}
    assert _ids(db, C.NOTE_LOG) == {f"{FRESH}:2:CONTACT_NOT_MAPPED"}
    # the audit map is never purged, not even for the expired and orphaned jobs
    assert _ids(db, C.AUDIT) == {f"{j}:0" for j in ALL_JOBS}
    assert report["kept"] == [C.AUDIT]
    removed = report["removed"]
    assert removed[C.JOBS] >= 1 and removed[C.PAGES] >= 2 and removed[C.NOTE_LOG] >= 2
    assert C.AUDIT not in removed
    # the CID's status still comes from its latest job
    assert job_store.latest_job(db, 9001)["_id"] == LATEST_OLD

    again = housekeeping.purge_expired(db, Thresholds(), now=NOW)  # idempotent
    assert OLD not in again["expired_job_ids"]
    assert {j["_id"] for j in db[C.JOBS].find({"_id": {"$in": list(ALL_JOBS)}})} == {LATEST_OLD, FRESH}
    assert _ids(db, C.AUDIT) == {f"{j}:0" for j in ALL_JOBS}


def test_retention_days_come_from_the_thresholds(seeded):
    db = seeded
    housekeeping.purge_expired(db, Thresholds(failed_record_retention_days=3, job_retention_days=5), now=NOW)
    assert _ids(db, C.NOTE_LOG) == set()
    assert {j["_id"] for j in db[C.JOBS].find({"_id": {"$in": list(ALL_JOBS)}})} == {LATEST_OLD, FRESH}


def test_a_run_purges_the_queue_itself_only_when_the_daily_purge_is_overdue(seeded):
    db = seeded
    days = Thresholds().failed_record_retention_days
    db[C.HOUSEKEEPING].delete_many({"_id": job_store.NOTE_LOG_PURGE})
    # never purged: the run start purges (the DAG may be paused) and records it
    assert job_store.purge_note_log_if_overdue(db, days, now=NOW) >= 2
    assert _ids(db, C.NOTE_LOG) == {f"{FRESH}:2:CONTACT_NOT_MAPPED"}
    assert db[C.HOUSEKEEPING].find_one({"_id": job_store.NOTE_LOG_PURGE})["removed"] >= 2
    # purged a day ago: the next runs skip the scan, even with an expired row waiting
    _log(db, FRESH, 9002, 1, 40)
    assert job_store.purge_note_log_if_overdue(db, days, now=NOW + DAYS) is None
    assert f"{FRESH}:1:CONTACT_NOT_MAPPED" in _ids(db, C.NOTE_LOG)
    # the daily purge ran (it records its time too); two days later without it, a run purges again
    housekeeping.purge_expired(db, Thresholds(), now=NOW + DAYS)
    _log(db, FRESH, 9002, 1, 40)
    assert job_store.purge_note_log_if_overdue(db, days, now=NOW + 2 * DAYS) is None
    assert job_store.purge_note_log_if_overdue(db, days, now=NOW + 3 * DAYS) >= 1
    assert _ids(db, C.NOTE_LOG) == {f"{FRESH}:2:CONTACT_NOT_MAPPED"}


def _lock(db, cid: int, run_id: str, age_s: int) -> None:
    at = NOW - dt.timedelta(seconds=age_s)
    db[C.LOCKS].insert_one(
        {"_id": cid, "job_id": f"job-{cid}", "run_id": run_id, "acquired_at": at, "heartbeat_at": at}
    )


def test_locks_of_runs_airflow_knows_are_over_are_released(cdp):
    _wipe(cdp)
    lease = 3600
    _lock(cdp, 9010, "hk-run-failed", 10)  # fresh heartbeat, but Airflow says the run failed
    _lock(cdp, 9011, "hk-run-running", 10 * lease)  # stale heartbeat, but Airflow says it still runs
    _lock(cdp, 9012, "hk-run-unknown-stale", 10 * lease)  # Airflow does not know it: the lease decides
    _lock(cdp, 9013, "hk-run-unknown-fresh", 10)
    states = {"hk-run-failed": "failed", "hk-run-running": "running"}

    def run_state(run_id: str) -> str:
        if run_id.startswith("hk-run-unknown"):
            raise LookupError(run_id)
        return states.get(run_id, "running")  # other sessions' locks on the shared server: left alone

    try:
        released = housekeeping.release_dead_locks(cdp, lease_seconds=lease, run_state=run_state, now=NOW)
        mine = {r["cid"]: r for r in released if r["cid"] in LOCK_CIDS}
        assert set(mine) == {9010, 9012}
        assert (mine[9010]["basis"], mine[9010]["run_state"]) == ("airflow", "failed")
        assert (mine[9012]["basis"], mine[9012]["run_state"]) == ("lease", None)
        assert job_store.get_lock(cdp, 9010) is None and job_store.get_lock(cdp, 9012) is None
        assert job_store.get_lock(cdp, 9011)["run_id"] == "hk-run-running"
        assert job_store.get_lock(cdp, 9013)["run_id"] == "hk-run-unknown-fresh"
        again = housekeeping.release_dead_locks(cdp, lease_seconds=lease, run_state=run_state, now=NOW)
        assert not [r for r in again if r["cid"] in LOCK_CIDS]
    finally:
        _wipe(cdp)


def test_the_dag_asks_airflow_through_the_task_sdk(cdp, run_dag):
    """dag.test(): the lock task asks Airflow (Task SDK → Execution API) for each lock's run. A real
    crm_notes_migration run that failed (its preconditions refused: flag off) loses its fresh lock; a run
    Airflow does not know is decided by its lease."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    _wipe(cdp)
    failed = run_dag({"cid": 9015, "company_sso_id": "00000000-0000-4000-8000-000000009015"}, flag=[])  # flag off
    assert str(failed.state) == "failed"
    _lock(cdp, 9015, failed.run_id, 10)  # heartbeat fresh: only Airflow's word can release it
    _lock(cdp, 9014, "hk-run-not-in-airflow", 10 * 3 * 3600 + 60)
    try:
        dag = DagBag(dag_folder=str(ROOT / "dags" / "crm_notes_housekeeping.py")).get_dag("crm_notes_housekeeping")
        run = dag.test()
        assert str(run.state) == "success"
        tis = {ti.task_id: ti for ti in run.get_task_instances()}
        assert {k: str(ti.state) for k, ti in tis.items()} == {
            "purge_expired": "success",
            "release_dead_locks": "success",
        }
        assert job_store.get_lock(cdp, 9014) is None and job_store.get_lock(cdp, 9015) is None
        out = tis["release_dead_locks"].xcom_pull(task_ids="release_dead_locks")
        mine = {r["cid"]: r for r in out["locks_released"] if r["cid"] in (9014, 9015)}
        assert (mine[9015]["basis"], mine[9015]["run_state"]) == ("airflow", "failed")
        assert mine[9014]["basis"] == "lease"
    finally:
        _wipe(cdp)
        cdp[C.LOCKS].delete_many({"_id": {"$in": [9014, 9015]}})
