"""One writer per CID (in process, against the real servers): a rollback holds the CID's lock, so a run or a
second rollback started meanwhile is refused and nothing can mark a later job rolled back; a page or a relink
whose run no longer holds the lock writes nothing (fencing); a rolled-back CID says so in its status; a run
cancelled before it recorded its job never starts.

The same scenarios under the real scheduler (trigger through the API, mark a run failed, delete a run) are the
stack tier's (tests/stack/test_races_stack.py).

CIDs used here: 9300–9304.
"""

from __future__ import annotations

import pytest

from devtools.seed import SeedSpec
from notes_migration.domain import config as C
from notes_migration.domain.codes import Fenced, Reason, Refused, State
from notes_migration.domain.config import RunConfig, Thresholds, job_id_for
from notes_migration.ops import cancel, rollback
from notes_migration.ops.queries import cid_status
from notes_migration.run import batch, coverage, plan, relink, start
from notes_migration.stores import job_store
from notes_migration.stores import s3_store as s3
from tests.helpers import assert_conserved, run_steps

pytestmark = pytest.mark.integration

NO_FILES = dict(image_share=0.0, audio_share=0.0, document_share=0.0, unsupported_file_share=0.0, upload_files=False)


def cfg_for(spec: SeedSpec, **kw) -> RunConfig:
    return RunConfig(cid=spec.cid, company_sso_id=spec.company_sso_id, batch_size=20, thresholds=Thresholds(), **kw)


def in_cdp(cdp, company: str) -> int:
    return cdp[C.CONTACT_NOTES].count_documents({"company_sso_id": company, "legacy_crm_note_id": {"$exists": True}})


@pytest.fixture(scope="module")
def cdp_bucket() -> s3.Bucket:
    bucket = s3.bucket_for(C.CDP_S3_CONN_ID)
    s3.ensure_bucket(bucket)
    return bucket


def test_a_rollback_holds_the_cid_against_a_run_and_a_second_rollback(seed_cid, crm, cdp, cdp_bucket, monkeypatch):
    spec = SeedSpec(cid=9300, notes=40, image_share=0.3)
    seed_cid(spec)
    first = run_steps(crm, cdp, cfg_for(spec), "one-writer-9300-a")
    objects = len(s3.list_objects(cdp_bucket, f"{spec.company_sso_id}/notes/") or {})
    assert in_cdp(cdp, spec.company_sso_id) > 0 and objects > 0

    seen: dict[str, object] = {}
    real_delete = s3.delete_prefix

    def meanwhile(bucket, prefix):  # while the rollback deletes: a run and a second rollback try the CID
        if not seen:
            with pytest.raises(Refused) as run_refused:
                start.start_job(crm, cdp, cfg_for(spec, force_rerun=True), run_id="one-writer-9300-b",
                                triggered_by="ops", flag_cids=[spec.cid])  # fmt: skip
            with pytest.raises(Refused) as second:
                rollback.rollback_cid(crm, cdp, spec.cid, requested_by="ops", dry_run=False, target=cdp_bucket)
            seen.update(run=run_refused.value.reason, rollback=second.value.reason)
        return real_delete(bucket, prefix)

    monkeypatch.setattr(s3, "delete_prefix", meanwhile)
    done = rollback.rollback_cid(crm, cdp, spec.cid, requested_by="ops", dry_run=False, target=cdp_bucket)
    assert seen == {"run": Reason.JOB_ALREADY_RUNNING, "rollback": Reason.JOB_ALREADY_RUNNING}
    assert job_store.get_job(cdp, job_id_for("one-writer-9300-b", spec.cid)) is None  # the refused run wrote nothing
    assert cdp[C.ROLLBACKS].count_documents({"cid": spec.cid, "_id": done["rollback"]["_id"]}) == 1
    assert done["rollback"]["objects_deleted"] == objects and in_cdp(cdp, spec.company_sso_id) == 0
    assert job_store.get_lock(cdp, spec.cid) is None  # released

    status = cid_status(cdp, spec.cid)
    assert status["status"] == State.ROLLED_BACK == "rolled_back"
    assert status["job_id"] == first["job_id"] and "notes_migrated" not in status and "validation" not in status
    rb = status["rollback"]
    assert (rb["by"], rb["job_status_before"], rb["notes_deleted"]) == (
        "ops",
        "completed_success",
        done["rollback"]["notes_deleted"],
    )
    assert rb["before"]["notes_migrated"] == done["rollback"]["notes_deleted"] and rb["objects_deleted"] == objects

    # migrated again: the new job is not rolled back, and the status is the new run's
    again = run_steps(crm, cdp, cfg_for(spec), "one-writer-9300-c")
    assert not job_store.get_job(cdp, again["job_id"]).get("rolled_back")
    assert cid_status(cdp, spec.cid)["status"] == "completed_success"


def test_a_page_and_a_relink_whose_run_lost_the_lock_write_nothing(seed_cid, crm, cdp, cdp_bucket):
    spec = SeedSpec(cid=9301, notes=60, image_share=0.3)
    seed_cid(spec)
    run_id = "one-writer-9301"
    job = start.start_job(crm, cdp, cfg_for(spec), run_id=run_id, triggered_by="ops", flag_cids=[spec.cid])
    coverage.run_coverage(crm, cdp, job["job_id"])
    first, *rest = plan.plan(crm, cdp, job["job_id"])
    batch.migrate_page(crm, cdp, job["job_id"], first)
    written = in_cdp(cdp, spec.company_sso_id)
    assert written > 0

    # the lock goes (a cancel, the teardown of a run marked failed, Ops' release-lock) while the run's tasks live
    assert job_store.release_lock(cdp, spec.cid, run_id)
    for page in rest:
        with pytest.raises(Fenced) as fenced:
            batch.migrate_page(crm, cdp, job["job_id"], page)
        assert fenced.value.reason == Reason.LOCK_LOST
    assert in_cdp(cdp, spec.company_sso_id) == written
    source, target = s3.bucket_for(C.CRM_S3_CONN_ID), cdp_bucket
    before = len(s3.list_objects(target, f"{spec.company_sso_id}/notes/") or {})
    with pytest.raises(Fenced):
        relink.relink_page(crm, cdp, job["job_id"], first, source=source, target=target)
    assert len(s3.list_objects(target, f"{spec.company_sso_id}/notes/") or {}) == before == 0

    # another run now holds the CID: the old run's pages still write nothing
    start.lock_cid(cdp, cfg_for(spec), job_id="other", run_id="one-writer-9301-other")
    try:
        with pytest.raises(Fenced) as fenced:
            batch.migrate_page(crm, cdp, job["job_id"], rest[0])
    finally:
        job_store.release_lock(cdp, spec.cid, "one-writer-9301-other")
    assert in_cdp(cdp, spec.company_sso_id) == written
    start.halt_fenced(cdp, job["job_id"], fenced.value)  # what the task edge does: the job ends with its reason
    assert job_store.get_job(cdp, job["job_id"])["halted"]["reason"] == "LOCK_LOST"
    assert_conserved(crm, cdp, spec.cid, job["job_id"])  # halted: the fenced batches' notes were never processed


def test_a_run_cancelled_before_it_recorded_its_job_never_starts(seed_cid, crm, cdp):
    spec = SeedSpec(cid=9302, notes=20, **NO_FILES)
    seed_cid(spec)
    run_id = "one-writer-9302"
    job_id = job_id_for(run_id, spec.cid)  # what the trigger returned
    conf = {"cid": spec.cid, "company_sso_id": spec.company_sso_id}
    record = cancel.cancel_before_start(cdp, job_id=job_id, run_id=run_id, conf=conf, cancelled_by="ops")
    assert record is not None and record["halted"]["reason"] == "CANCELLED"
    with pytest.raises(Refused) as refused:
        start.start_job(crm, cdp, cfg_for(spec), run_id=run_id, triggered_by="ops", flag_cids=[spec.cid])
    assert refused.value.reason == Reason.CANCELLED
    assert job_store.get_lock(cdp, spec.cid) is None and in_cdp(cdp, spec.company_sso_id) == 0
    status = cid_status(cdp, spec.cid)
    assert (status["status"], status["halted_reason"], status["job_id"]) == ("halted", "CANCELLED", job_id)
    # a second cancel of the same id finds the record: nothing more to do
    assert cancel.cancel_before_start(cdp, job_id=job_id, run_id=run_id, conf=conf, cancelled_by="ops") is None
