"""End to end through dag.test() against the real local PostgreSQL (CRM) and FerretDB (CDP).

CIDs used here: 100 and 5000 (the Stage-1 pair, same data as the demo) and 1001–1099.
"""

from __future__ import annotations

import datetime as dt

import pytest

from devtools.seed import DEMO_SPECS, SeedSpec, backfill_contacts, company_for
from notes_migration.domain.codes import Reason
from notes_migration.domain.config import CONTACT_NOTES, JOBS, NOTE_LOG, UNKNOWN_OWNER_LABEL
from notes_migration.ops.queries import cid_status
from notes_migration.run.plan import batches_per_task
from notes_migration.stores import job_store
from tests.helpers import PARAM_DEFAULTS, run_migration, task_states

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def conf(cid: int, **kw) -> dict:
    return {**PARAM_DEFAULTS, "cid": cid, "company_sso_id": company_for(cid), **kw}


def migrated_docs(cdp, cid: int) -> dict[int, dict]:
    q = {"company_sso_id": company_for(cid), "legacy_crm_note_id": {"$exists": True}}
    return {d["legacy_crm_note_id"]: d for d in cdp[CONTACT_NOTES].find(q)}


def source_rows(crm, cid: int) -> dict[int, tuple]:
    with crm.cursor() as cur:
        cur.execute(
            """SELECT n.id, n.note, n.crm_person_id, n.created_at, n.updated_at, t.name, n.type,
                      n.crm_company_id, n.creator_id
                 FROM crm_notes n LEFT JOIN crm_note_types t ON t.id = n.crm_note_type_id
                WHERE n.organization_id = %s""",
            (cid,),
        )
        return {r[0]: r for r in cur.fetchall()}


ACTIVITIES = {"Calls", "Emails", "Meetings", "WhatsApp", "SMS"}


@pytest.fixture(scope="module")
def stage1(seed_cid, migration_dag, crm, cdp):
    """Seed and migrate the Stage-1 pair once for this module; each run checked for conservation."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for spec in DEMO_SPECS:
            seeded = seed_cid(spec)
            dag_run = run_migration(migration_dag, mp, conf(spec.cid), crm=crm, cdp=cdp)
            out[spec.cid] = (seeded, dag_run)
    return out


@pytest.mark.parametrize("cid", [100, 5000])
def test_stage1_cids_complete_with_full_match(stage1, cdp, crm, cid):
    _, dag_run = stage1[cid]
    assert str(dag_run.state) == "success", task_states(dag_run)
    status = cid_status(cdp, cid)
    assert status["status"] == "completed_success"
    assert status["validation"]["match_pct"] == 100.0
    assert status["validation"]["content_mismatches"] == 0
    src = source_rows(crm, cid)
    in_scope = {i for i, r in src.items() if r[2] is not None and r[5] not in ACTIVITIES}
    assert status["notes_migrated"] == len(in_scope) == len(migrated_docs(cdp, cid))
    assert set(migrated_docs(cdp, cid)) == in_scope
    counts = status["counts"]
    assert counts["migrated"] == len(in_scope) and counts["failed"] == {}
    assert counts["out_of_scope"]["ACTIVITY_OUT_OF_SCOPE"] == sum(
        1 for r in src.values() if r[2] is not None and r[5] in ACTIVITIES
    )
    assert counts["out_of_scope"]["NOT_A_PERSON_NOTE"] == sum(1 for r in src.values() if r[2] is None)
    batches = -(-sum(1 for r in src.values() if r[2] is not None) // 500)  # one page result per insert batch
    assert len(job_store.page_results(cdp, status["job_id"])) == batches
    pages = task_states(dag_run)["migrate_page"]  # one mapped task per task page of k batches
    assert len(pages) == -(-batches // batches_per_task(batches)) and all(s == "success" for s in pages)


def test_migrated_content_matches_the_source(stage1, cdp, crm):
    cid = 5000
    docs = migrated_docs(cdp, cid)
    src = source_rows(crm, cid)
    mentions = labelled = multi_fk = 0
    for legacy, doc in docs.items():
        row = src[legacy]
        # timestamps: the CRM's UTC wall-clock, to the millisecond, never the insert time
        for stored, original in ((doc["created_at"], row[3]), (doc["updated_at"], row[4])):
            assert stored.tzinfo is not None and stored.utcoffset() == dt.timedelta(0)
            assert stored.replace(tzinfo=None) == original.replace(microsecond=original.microsecond // 1000 * 1000)
        assert "data-user-id" not in doc["note"]
        if row[1] and "data-user-id" in row[1]:
            mentions += 1
            assert "@" in doc["note"]
        if not (row[1] or "").startswith("<p>"):
            assert not doc["note"].startswith("<p>")  # no <p> wrapping added
        if doc["owner_id"] is None:
            labelled += 1
            assert doc["legacy_owner_label"]
        else:
            assert "legacy_owner_label" not in doc
        if row[7] is not None:
            multi_fk += 1
        assert doc["legacy_crm_note_id"] is not None and doc["attachments"] is not None
    assert mentions > 50 and labelled > 50 and multi_fk > 50
    assert any(d["legacy_owner_label"] == UNKNOWN_OWNER_LABEL for d in docs.values() if d["owner_id"] is None)
    # human-written notes of the company are untouched and not counted
    humans = cdp[CONTACT_NOTES].count_documents(
        {"company_sso_id": company_for(cid), "legacy_crm_note_id": {"$exists": False}}
    )
    assert humans == 3
    # audit map: every migrated note, legacy id → CDP id
    assert job_store.audit_entries(cdp, cid) == {k: d["_id"] for k, d in docs.items()}


def test_every_skip_and_drop_is_reason_coded(stage1, cdp, crm):
    job = job_store.latest_job(cdp, 100)
    log = job_store.note_log(cdp, job["_id"])
    assert log and all(e["reason_code"] in Reason.__members__ for e in log)
    skipped = {e["legacy_crm_note_id"] for e in log if e["outcome"] == "skipped"}
    src = source_rows(crm, 100)
    assert skipped == {i for i, r in src.items() if r[2] is not None and r[5] in ACTIVITIES}
    with crm.cursor() as cur:
        cur.execute(
            "SELECT crm_note_id FROM crm_checkins c JOIN crm_notes n ON n.id = c.crm_note_id "
            "WHERE n.organization_id = 100 AND n.crm_person_id IS NOT NULL"
        )
        checkin_notes = {r[0] for r in cur.fetchall()}
    dropped = {e["legacy_crm_note_id"] for e in log if e["reason_code"] == "CHECKIN_DROPPED"}
    migrated = set(migrated_docs(cdp, 100))
    assert dropped == checkin_notes & migrated


def test_rerun_refused_then_force_rerun_inserts_nothing(stage1, cdp, run_dag):
    cid = 100
    before = len(migrated_docs(cdp, cid))
    jobs_before = cdp[JOBS].count_documents({"cid": cid})
    refused = run_dag(conf(cid))
    assert str(refused.state) == "failed"
    assert task_states(refused)["preconditions"] == ["failed"]
    assert cdp[JOBS].count_documents({"cid": cid}) == jobs_before  # ALREADY_MIGRATED wrote nothing
    forced = run_dag(conf(cid, force_rerun=True))
    assert str(forced.state) == "success"
    status = cid_status(cdp, cid)
    assert status["status"] == "completed_success"
    assert status["counts"]["migrated"] == 0
    assert status["counts"]["already_migrated"] == before == len(migrated_docs(cdp, cid))


@pytest.fixture(scope="module")
def small(seed_cid):
    spec = SeedSpec(cid=1001, notes=60)
    return spec, seed_cid(spec)


def _nothing_written(cdp, cid):
    return (
        cdp[CONTACT_NOTES].count_documents(
            {"company_sso_id": company_for(cid), "legacy_crm_note_id": {"$exists": True}}
        )
        == 0
        and cdp[JOBS].count_documents({"cid": cid}) == 0
        and cdp[NOTE_LOG].count_documents({"cid": cid}) == 0
    )


def test_flag_off_writes_nothing(small, cdp, run_dag, caplog):
    dag_run = run_dag(conf(1001), flag=[999999])
    assert str(dag_run.state) == "failed"
    assert "FLAG_DISABLED" in caplog.text
    assert _nothing_written(cdp, 1001) and job_store.get_lock(cdp, 1001) is None


def test_unknown_cid_writes_nothing(cdp, run_dag, caplog):
    dag_run = run_dag(conf(1099))  # never seeded
    assert str(dag_run.state) == "failed"
    assert "CID_NOT_FOUND" in caplog.text
    assert _nothing_written(cdp, 1099)


def test_second_concurrent_run_is_refused_and_touches_nothing(small, cdp, run_dag, caplog):
    holder = job_store.acquire_lock(cdp, 1001, job_id="other-job", run_id="other-run", lease_seconds=3600)
    try:
        dag_run = run_dag(conf(1001))
        assert str(dag_run.state) == "failed"
        assert "JOB_ALREADY_RUNNING" in caplog.text
        assert _nothing_written(cdp, 1001)
        assert job_store.get_lock(cdp, 1001)["run_id"] == holder["run_id"]  # the other run keeps its lock
    finally:
        job_store.release_lock(cdp, 1001, "other-run")


def test_lock_left_by_a_dead_run_is_recovered(small, seed_cid, cdp, run_dag):
    seed_cid(small[0])
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    cdp["crm_migration_locks"].insert_one(
        {"_id": 1001, "job_id": "dead", "run_id": "dead-run", "acquired_at": stale, "heartbeat_at": stale}
    )
    dag_run = run_dag(conf(1001))
    assert str(dag_run.state) == "success"
    assert cid_status(cdp, 1001)["status"] == "completed_success"
    assert job_store.get_lock(cdp, 1001) is None  # released by the teardown


def test_activities_skipped_by_default_and_included_on_request(seed_cid, cdp, crm, run_dag):
    spec = SeedSpec(cid=1002, notes=80, activity_share=0.5)
    seed_cid(spec)
    src = source_rows(crm, 1002)
    person = {i for i, r in src.items() if r[2] is not None}
    activities = {i for i in person if src[i][5] in ACTIVITIES}
    assert activities
    assert str(run_dag(conf(1002)).state) == "success"
    assert set(migrated_docs(cdp, 1002)) == person - activities
    dag_run = run_dag(conf(1002, include_activities=True, force_rerun=True))
    assert str(dag_run.state) == "success"
    assert set(migrated_docs(cdp, 1002)) == person
    status = cid_status(cdp, 1002)
    assert status["counts"]["migrated"] == len(activities) and status["validation"]["match_pct"] == 100.0


def test_dry_run_writes_no_notes(seed_cid, cdp, run_dag):
    seed_cid(SeedSpec(cid=1003, notes=50))
    dag_run = run_dag(conf(1003, dry_run=True))
    assert str(dag_run.state) == "success"
    assert len(migrated_docs(cdp, 1003)) == 0
    assert cid_status(cdp, 1003)["status"] == "not_started"  # dry runs never change a CID's status
    dry = job_store.latest_job(cdp, 1003, include_dry_runs=True)
    assert dry["config"]["dry_run"] and dry["totals"]["migrated"] > 0


def test_coverage_below_gate_stops_before_any_write(seed_cid, cdp, run_dag):
    seed_cid(SeedSpec(cid=1004, notes=200, unmapped_person_share=0.2))
    dag_run = run_dag(conf(1004))
    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["coverage_preflight"] == ["failed"] and states["validate"] == ["success"]
    status = cid_status(cdp, 1004)
    assert status["status"] == "halted" and status["halted_reason"] == "COVERAGE_BELOW_GATE"
    assert status["coverage"]["coverage_pct"] < 99 and status["coverage"]["persons_unmapped"] > 0
    assert len(migrated_docs(cdp, 1004)) == 0
    assert job_store.get_lock(cdp, 1004) is None


def test_failure_rate_halts_then_backfill_rerun_inserts_only_the_missing(seed_cid, cdp, run_dag):
    spec = SeedSpec(cid=1005, notes=800, unmapped_person_share=0.06)
    seeded = seed_cid(spec)
    lowered = {"coverage_gate": 0.5}
    dag_run = run_dag(conf(1005, batch_size=100), settings=lowered)
    assert str(dag_run.state) == "failed"
    pages = task_states(dag_run)["migrate_page"]
    # the page that crosses 1% after a full batch halts the run; every page after it writes nothing
    assert pages.count("failed") == 1 and pages.count("skipped") >= len(pages) - 2
    status = cid_status(cdp, 1005)
    assert status["status"] == "halted" and status["failure_rate"] > 0.01
    assert status["error_log_url"].endswith(f"/{status['job_id']}/errors")
    first = migrated_docs(cdp, 1005)
    ran = len(pages) - pages.count("skipped")
    assert 0 < len(first) <= 100 * ran
    failures = job_store.note_log(cdp, status["job_id"], outcome="failed")
    assert failures and {f["reason_code"] for f in failures} == {"CONTACT_NOT_MAPPED"}
    assert all(f["details"] for f in failures)

    backfill_contacts(cdp, spec.company_sso_id, seeded["unmapped_person_ids"])
    dag_run = run_dag(conf(1005, batch_size=100), settings=lowered)
    assert str(dag_run.state) == "success", task_states(dag_run)
    status = cid_status(cdp, 1005)
    assert status["status"] == "completed_success" and status["validation"]["match_pct"] == 100.0
    assert status["counts"]["already_migrated"] == len(first)
    assert status["counts"]["migrated"] == status["notes_migrated"] - len(first)
