"""Fault injection end to end through dag.test(): a server goes away mid-run and comes back.

The shared local servers are never stopped: each test puts its own TCP proxy (devtools/tcp_proxy.py)
between the DAG and one server and points that connection (AIRFLOW_CONN_*) at the proxy; stopping the
proxy closes its port and cuts every open connection, which is what a client sees of a server that
stops. Every test is bounded in time (pytest-timeout-free: each fault is short and every wait has a cap)
and asserts, after recovery, 0 notes lost, 0 duplicated and every note's content verified (validation's
content check); run_dag checks conservation after every run.

CIDs used here: 6001–6009.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from devtools.seed import SeedSpec
from devtools.tcp_proxy import TcpProxy
from notes_migration.domain import config as C
from notes_migration.domain.codes import RUN_ERROR_OUTCOME, Event, Reason
from notes_migration.ops.queries import cid_status, error_log
from notes_migration.run import batch, relink, validate
from notes_migration.stores import cdp_store, connections, job_store
from notes_migration.stores import s3_store as s3
from tests.helpers import PARAM_DEFAULTS, point_connection, task_states

NO_FILES = dict(image_share=0.0, audio_share=0.0, document_share=0.0, unsupported_file_share=0.0, upload_files=False)
FAST_CRM_RETRIES = {"crm_retry_backoff_seconds": 0.1}


def conf(spec: SeedSpec, **kw) -> dict:
    return {**PARAM_DEFAULTS, "cid": spec.cid, "company_sso_id": spec.company_sso_id, **kw}


def in_scope(crm, cid: int) -> set[int]:
    with crm.cursor() as cur:
        cur.execute(
            """SELECT n.id FROM crm_notes n LEFT JOIN crm_note_types t ON t.id = n.crm_note_type_id
                WHERE n.organization_id = %s AND n.crm_person_id IS NOT NULL
                  AND NOT COALESCE(t.name = ANY(%s), false)""",
            (cid, sorted(C.ACTIVITY_TYPE_NAMES)),
        )
        return {r[0] for r in cur.fetchall()}


def assert_recovered(crm, cdp, spec: SeedSpec) -> dict:
    """0 lost, 0 duplicated (source in-scope set == CDP set, one document each), content verified."""
    expected = in_scope(crm, spec.cid)
    query = {"company_sso_id": spec.company_sso_id, "legacy_crm_note_id": {"$exists": True}}
    ids = [d["legacy_crm_note_id"] for d in cdp[C.CONTACT_NOTES].find(query, {"legacy_crm_note_id": 1})]
    assert len(ids) == len(set(ids)), "duplicated notes"
    assert set(ids) == expected, f"lost {sorted(expected - set(ids))[:5]}, extra {sorted(set(ids) - expected)[:5]}"
    status = cid_status(cdp, spec.cid)
    assert status["status"] == "completed_success", status
    v = status["validation"]
    assert v["match_pct"] == 100.0 and v["content_mismatches"] == 0 and v["expected"] == v["found"] == len(expected)
    return status


@pytest.fixture
def crm_proxy(monkeypatch):
    with TcpProxy(int(os.environ.get("CRM_PG_PORT", 54329))) as proxy:
        point_connection(monkeypatch, C.CRM_POSTGRES_CONN_ID, port=proxy.port)
        yield proxy


def _events(cdp, job_id: str, name: str) -> list[dict]:
    return [e for e in job_store.events(cdp, job_id) if e["event"] == name]


# --------------------------------------------------------------------------- CRM PostgreSQL stops mid-run


def test_crm_stops_mid_run_retries_then_halts_crm_extract_failed(
    seed_cid, crm, cdp, run_dag, crm_proxy, monkeypatch, caplog
):
    spec = SeedSpec(cid=6001, notes=150, **NO_FILES)
    seed_cid(spec)
    real = batch.migrate_page
    pages_done = []

    def page_then_crm_stops(*args, **kwargs):
        out = real(*args, **kwargs)
        pages_done.append(out["page_no"])
        crm_proxy.stop()  # the CRM goes away after the first page
        return out

    monkeypatch.setattr(batch, "migrate_page", page_then_crm_stops)
    started = time.monotonic()
    dag_run = run_dag(conf(spec, batch_size=50), settings=FAST_CRM_RETRIES)
    assert time.monotonic() - started < 120
    states = task_states(dag_run)  # the run's own state is the DAG's business: judge by tasks and the status
    pages = states["migrate_page"]  # one page ran, the next one halted, later ones wrote nothing (any order)
    assert pages.count("success") == 1 and pages.count("failed") == 1, states
    assert set(pages) <= {"success", "failed", "skipped"}
    # 1 try + 3 retries with exponential backoff (0.1, 0.2, 0.4 s), then the halt
    retries = [r.getMessage() for r in caplog.records if "CRM read read_page failed" in r.getMessage()]
    assert len(retries) == 3, retries
    assert [m.split("retrying in ")[1][:4] for m in retries] == ["0.10", "0.20", "0.40"]

    status = cid_status(cdp, spec.cid)
    assert status["status"] == "halted" and status["halted_reason"] == Reason.CRM_EXTRACT_FAILED
    job_id = status["job_id"]
    errors = error_log(cdp, job_id)
    run_errors = [e for e in errors if e["outcome"] == RUN_ERROR_OUTCOME]
    assert [e["reason_code"] for e in run_errors] == ["CRM_EXTRACT_FAILED"]
    assert "migrate_page " in run_errors[0]["details"] and "4 times" in run_errors[0]["details"]
    halted = _events(cdp, job_id, Event.HALTED)
    assert [e["properties"]["reason"] for e in halted] == ["CRM_EXTRACT_FAILED"]
    # PagerDuty P1 through the alert plan of a halted run (the local connection logs instead of sending)
    assert any("PagerDuty delivery disabled" in r.getMessage() and "critical" in r.getMessage() for r in caplog.records)
    assert states["send_alerts"] == ["success"]
    assert job_store.get_lock(cdp, spec.cid) is None

    crm_proxy.start()  # the CRM is back: a new run (the CID is halted, not completed) finishes the job
    monkeypatch.setattr(batch, "migrate_page", real)
    dag_run = run_dag(conf(spec, batch_size=50), settings=FAST_CRM_RETRIES)
    assert str(dag_run.state) == "success", task_states(dag_run)
    status = assert_recovered(crm, cdp, spec)
    assert status["counts"]["already_migrated"] > 0 and status["counts"]["migrated"] > 0


def test_crm_down_at_start_refuses_with_reason_and_writes_nothing(seed_cid, cdp, run_dag, crm_proxy, caplog):
    spec = SeedSpec(cid=6002, notes=20, **NO_FILES)
    seed_cid(spec)
    crm_proxy.stop()
    dag_run = run_dag(conf(spec), settings=FAST_CRM_RETRIES)
    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["preconditions"] == ["failed"]
    assert "CRM_EXTRACT_FAILED" in caplog.text
    assert cdp[C.JOBS].count_documents({"cid": spec.cid}) == 0 and job_store.get_lock(cdp, spec.cid) is None


# --------------------------------------------------------------------------- count source down at validation


def test_count_source_down_at_validation_is_validation_skipped(
    seed_cid, crm, cdp, run_dag, crm_proxy, monkeypatch, caplog
):
    spec = SeedSpec(cid=6003, notes=80, **NO_FILES)
    seed_cid(spec)
    real = validate.validate

    def crm_stops_then_validate(*args, **kwargs):
        crm_proxy.stop()
        return real(*args, **kwargs)

    monkeypatch.setattr(validate, "validate", crm_stops_then_validate)
    dag_run = run_dag(conf(spec), settings=FAST_CRM_RETRIES)
    states = task_states(dag_run)
    assert states["validate"] == ["success"] and states["send_alerts"] == ["success"]
    assert states["finalise"] == ["failed"]  # not completed_success: red in the UI
    status = cid_status(cdp, spec.cid)
    assert status["status"] == "completed_with_errors"
    assert status["validation"]["skipped"] == Reason.VALIDATION_SKIPPED and status["validation"]["match_pct"] is None
    job = job_store.get_job(cdp, status["job_id"])
    assert job["verdict"]["validation_skipped"] == "VALIDATION_SKIPPED"
    assert [e["reason_code"] for e in error_log(cdp, status["job_id"]) if e["outcome"] == RUN_ERROR_OUTCOME] == [
        "VALIDATION_SKIPPED"
    ]
    completed = _events(cdp, status["job_id"], Event.COMPLETED)
    assert completed[-1]["properties"]["validation_skipped"] == "VALIDATION_SKIPPED"
    alerts = [r.getMessage() for r in caplog.records if "PagerDuty delivery disabled" in r.getMessage()]
    assert alerts and "not validated (VALIDATION_SKIPPED)" in alerts[-1]

    crm_proxy.start()
    monkeypatch.setattr(validate, "validate", real)
    dag_run = run_dag(conf(spec, force_rerun=True), settings=FAST_CRM_RETRIES)
    assert str(dag_run.state) == "success", task_states(dag_run)
    status = assert_recovered(crm, cdp, spec)
    assert status["counts"]["migrated"] == 0  # the first run had written every note


# --------------------------------------------------------------------------- MongoDB-compatible server stops during a page


@pytest.fixture
def mongo_proxy(monkeypatch):
    with TcpProxy(int(os.environ.get("CDP_MONGO_PORT", 27117))) as proxy:
        point_connection(
            monkeypatch,
            C.CDP_MONGO_CONN_ID,
            port=proxy.port,
            extra={"serverSelectionTimeoutMS": 2000, "connectTimeoutMS": 2000},
        )
        connections._mongo_client.cache_clear()  # the DAG's tasks get a client through the proxy
        try:
            yield proxy
        finally:
            connections._mongo_client.cache_clear()


def test_mongo_stops_during_pages_batch_insert_failed_only_where_retry_failed(
    seed_cid, crm, cdp, run_dag, mongo_proxy, monkeypatch
):
    spec = SeedSpec(cid=6004, notes=150, **NO_FILES)
    seed_cid(spec)
    real = cdp_store.MongoNoteWriter._write_batch
    batches = []

    def flaky(self, docs, result, retry):
        if retry:  # the first attempt of a page's batch (pages may run in any order)
            batches.append(docs[0]["legacy_crm_note_id"])
            n = len(batches)
            if n in (1, 2):
                mongo_proxy.stop()  # batch 1: down for the attempt and its retry; batch 2: back for the retry
            try:
                return real(self, docs, result, retry)
            finally:
                mongo_proxy.start()
        if len(batches) == 2:
            mongo_proxy.start()
        return real(self, docs, result, retry)

    monkeypatch.setattr(cdp_store.MongoNoteWriter, "_write_batch", flaky)
    settings = {"max_failure_rate": 1.0}  # keep going: this test is about what each page records
    started = time.monotonic()
    dag_run = run_dag(conf(spec, batch_size=50), settings=settings)
    assert time.monotonic() - started < 120
    assert len(batches) == 3 and mongo_proxy.stops == 2
    status = cid_status(cdp, spec.cid)
    assert status["status"] == "completed_with_errors", status
    job_id = status["job_id"]
    results = job_store.page_results(cdp, job_id)
    first, second = ([p for p in results if p["lo_id"] <= b <= p["hi_id"]][0] for b in batches[:2])
    failed = {e["legacy_crm_note_id"] for e in job_store.note_log(cdp, job_id, outcome="failed")}
    assert {e["reason_code"] for e in job_store.note_log(cdp, job_id, outcome="failed")} == {"BATCH_INSERT_FAILED"}
    scope = in_scope(crm, spec.cid)
    page0 = {i for i in scope if first["lo_id"] <= i <= first["hi_id"]}
    assert failed == page0 and first["migrated"] == 0  # the page whose retry also failed
    assert second["failed"] == 0 and second["migrated"] == second["attempted"] > 0  # its retry succeeded
    migrated = set(job_store.audit_entries(cdp, spec.cid))
    assert migrated == scope - page0

    monkeypatch.setattr(cdp_store.MongoNoteWriter, "_write_batch", real)
    dag_run = run_dag(conf(spec, batch_size=50, force_rerun=True), settings=settings)
    assert str(dag_run.state) == "success", task_states(dag_run)
    rerun = cid_status(cdp, spec.cid)
    audit = cdp[C.AUDIT].find({"job_id": rerun["job_id"]})
    assert {i for a in audit for i in a["legacy_crm_note_ids"]} == failed  # the re-run inserted exactly those
    assert rerun["counts"]["migrated"] == len(failed) and rerun["counts"]["already_migrated"] == len(scope - page0)
    assert_recovered(crm, cdp, spec)


# --------------------------------------------------------------------------- S3 server stops during relinking


FILES_ONLY_GOOD = dict(
    image_share=0.35,
    audio_share=0.2,
    document_share=0.2,
    unsupported_file_share=0.0,
    missing_file_share=0.0,
    mislabelled_file_share=0.0,
    disguised_file_share=0.0,
    oversized_file_share=0.0,
)


@pytest.fixture
def s3_proxy(monkeypatch):
    with TcpProxy(int(os.environ.get("S3_PORT", 9333))) as proxy:
        for conn_id in (C.CRM_S3_CONN_ID, C.CDP_S3_CONN_ID):
            point_connection(monkeypatch, conn_id, extra={"endpoint_url": f"http://127.0.0.1:{proxy.port}"})
        yield proxy


def test_s3_stops_during_relinking_notes_stay_files_marked_then_rerun_copies_each_file_once(
    seed_cid, crm, cdp, run_dag, s3_proxy, monkeypatch
):

    spec = SeedSpec(cid=6005, notes=100, **FILES_ONLY_GOOD)
    seed_cid(spec)
    real = relink.copy_files
    calls = []

    def s3_down_for_first_page(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            s3_proxy.stop()
        try:
            return real(*args, **kwargs)
        finally:
            s3_proxy.start()

    monkeypatch.setattr(relink, "copy_files", s3_down_for_first_page)
    started = time.monotonic()
    dag_run = run_dag(conf(spec, batch_size=40))
    assert time.monotonic() - started < 150
    first = job_store.get_job(cdp, cid_status(cdp, spec.cid)["job_id"])["attachments"]
    assert first["failed"] > 0 and first["relinked"] > 0, first
    assert set(first["failed_by_reason"]) <= {"ATTACHMENT_DOWNLOAD_FAILED", "ATTACHMENT_UPLOAD_FAILED"}
    # the notes stay; their failed files are marked unavailable with their reason
    notes = list(
        cdp[C.CONTACT_NOTES].find({"company_sso_id": spec.company_sso_id, "legacy_crm_note_id": {"$exists": True}})
    )
    assert {n["legacy_crm_note_id"] for n in notes} == in_scope(crm, spec.cid)
    unavailable = [a for n in notes for a in n["attachments"] if a.get("unavailable")]
    assert len(unavailable) == first["failed"]
    assert all(a["reason_code"] in first["failed_by_reason"] and "url" not in a for a in unavailable)
    assert str(dag_run.state) in ("success", "failed")

    monkeypatch.setattr(relink, "copy_files", real)
    dag_run = run_dag(conf(spec, batch_size=40, force_rerun=True))
    assert str(dag_run.state) == "success", task_states(dag_run)
    second = job_store.get_job(cdp, cid_status(cdp, spec.cid)["job_id"])["attachments"]
    assert second["failed"] == 0 and second["relinked"] == first["relinked"] + first["failed"]
    assert second["copied"] == first["failed"] and second["reused"] == first["copied"]  # no file copied twice
    target = s3.bucket_for(C.CDP_S3_CONN_ID)
    objects = s3.list_objects(target, f"{spec.company_sso_id}/") or {}
    assert len(objects) == first["copied"] + second["copied"] == second["relinked"]
    notes = list(
        cdp[C.CONTACT_NOTES].find({"company_sso_id": spec.company_sso_id, "legacy_crm_note_id": {"$exists": True}})
    )
    assert not [a for n in notes for a in n["attachments"] if a.get("unavailable")]
    assert_recovered(crm, cdp, spec)


# --------------------------------------------------------------------------- three force_reruns: one end state


def cid_digest(cdp, spec: SeedSpec) -> str:
    """The CID's migrated notes (every field) and its objects in CDP storage (key, size, etag)."""
    notes = sorted(
        cdp[C.CONTACT_NOTES].find({"company_sso_id": spec.company_sso_id, "legacy_crm_note_id": {"$exists": True}}),
        key=lambda d: d["legacy_crm_note_id"],
    )
    objects = s3.list_objects(s3.bucket_for(C.CDP_S3_CONN_ID), f"{spec.company_sso_id}/") or {}
    listing = sorted((k, getattr(o, "size", None), getattr(o, "etag", None)) for k, o in objects.items())
    blob = json.dumps({"notes": notes, "objects": listing}, default=str, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def test_three_force_reruns_leave_an_identical_end_state(seed_cid, crm, cdp, run_dag):
    spec = SeedSpec(cid=6006, notes=120)  # default shares: some files fail for good (missing, disguised, …)
    seed_cid(spec)
    assert str(run_dag(conf(spec)).state) == "success"
    assert_recovered(crm, cdp, spec)
    digests = [cid_digest(cdp, spec)]
    for _ in range(3):
        dag_run = run_dag(conf(spec, force_rerun=True))
        assert str(dag_run.state) == "success", task_states(dag_run)
        digests.append(cid_digest(cdp, spec))
        status = assert_recovered(crm, cdp, spec)
        assert status["counts"]["migrated"] == 0
    assert len(set(digests)) == 1, digests
