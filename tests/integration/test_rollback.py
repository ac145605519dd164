"""Rollback of one CID against the real servers: dry run, refusal on notes changed in CDP, exact removal of the
migrated notes and their copied files, the record, the audit kept (marked), and a fresh re-migration.

CIDs used here: 9050–9052.
"""

from __future__ import annotations

import pytest

from devtools.seed import SeedSpec
from notes_migration.domain import config as C
from notes_migration.domain.codes import Reason, Refused
from notes_migration.domain.config import RunConfig, Thresholds
from notes_migration.ops import queries as ops
from notes_migration.ops.rollback import RollbackRefused, rollback_cid
from notes_migration.run.start import check_preconditions
from notes_migration.stores import job_store
from notes_migration.stores import s3_store as s3
from tests.cids import cids

pytestmark = pytest.mark.integration
CID = cids(__name__)[0]  # and CID + 1, CID + 2


@pytest.fixture(scope="module")
def cdp_bucket() -> s3.Bucket:
    bucket = s3.bucket_for("cdp_s3")
    s3.ensure_bucket(bucket)
    return bucket


def migrated(cdp, company: str) -> int:
    return cdp[C.CONTACT_NOTES].count_documents({"company_sso_id": company, "legacy_crm_note_id": {"$exists": True}})


def test_rollback_of_one_cid(seed_cid, run_dag, cdp, crm, cdp_bucket):
    cdp[C.ROLLBACKS].delete_many({"cid": CID})  # records of earlier sessions (seeding keeps them)
    seeded = seed_cid(SeedSpec(cid=CID, notes=40, image_share=0.3))
    company = seeded["company_sso_id"]
    other = seed_cid(SeedSpec(cid=CID + 1, notes=10))  # another CID: untouched by the rollback
    conf = {"cid": CID, "company_sso_id": company, "batch_size": 20}
    run_dag(conf)
    run_dag({"cid": CID + 1, "company_sso_id": other["company_sso_id"], "batch_size": 20}, flag=[CID + 1])
    first = ops.cid_status(cdp, CID)
    assert first["status"] == "completed_success"
    n_notes = migrated(cdp, company)
    human = cdp[C.CONTACT_NOTES].count_documents({"company_sso_id": company}) - n_notes
    objects = len(s3.list_objects(cdp_bucket, f"{company}/notes/") or {})
    assert n_notes > 0 and objects > 0 and human > 0
    other_notes = migrated(cdp, other["company_sso_id"])

    # a note edited by an agent in CDP after migration: the rollback refuses and lists it, writing nothing
    edited = cdp[C.CONTACT_NOTES].find_one({"company_sso_id": company, "legacy_crm_note_id": {"$exists": True}})
    cdp[C.CONTACT_NOTES].update_one({"_id": edited["_id"]}, {"$set": {"note": edited["note"] + "<p>edited</p>"}})
    for dry in (True, False):
        with pytest.raises(RollbackRefused) as refused:
            rollback_cid(crm, cdp, CID, requested_by="ops", dry_run=dry, target=cdp_bucket)
        assert refused.value.reason == Reason.ROLLBACK_REFUSED
        assert refused.value.report["changed_in_cdp"] == [
            {"legacy_crm_note_id": edited["legacy_crm_note_id"], "fields": ["note_hash"]}
        ]
    assert migrated(cdp, company) == n_notes and cdp[C.ROLLBACKS].count_documents({"cid": CID}) == 0
    cdp[C.CONTACT_NOTES].update_one({"_id": edited["_id"]}, {"$set": {"note": edited["note"]}})

    # dry run: the plan, nothing written
    plan = rollback_cid(crm, cdp, CID, requested_by="ops", dry_run=True, target=cdp_bucket)
    assert (plan["notes_to_delete"], plan["changed_in_cdp"], plan["companies"]) == (n_notes, [], [company])
    assert migrated(cdp, company) == n_notes and cdp[C.ROLLBACKS].count_documents({"cid": CID}) == 0

    done = rollback_cid(crm, cdp, CID, requested_by="ops", dry_run=False, target=cdp_bucket)
    assert done["rollback"]["notes_deleted"] == n_notes and done["rollback"]["objects_deleted"] == objects
    assert migrated(cdp, company) == 0
    assert cdp[C.CONTACT_NOTES].count_documents({"company_sso_id": company}) == human  # CDP's own notes stay
    assert (s3.list_objects(cdp_bucket, f"{company}/notes/") or {}) == {}
    assert migrated(cdp, other["company_sso_id"]) == other_notes  # another CID untouched
    [record] = list(cdp[C.ROLLBACKS].find({"cid": CID}))
    assert record["requested_by"] == "ops" and record["at"] and record["notes_deleted"] == n_notes
    audit = list(cdp[C.AUDIT].find({"cid": CID}))
    assert audit and all(a["rollback_id"] == record["_id"] and a["rolled_back_at"] for a in audit)  # kept, marked
    with pytest.raises(Refused) as again:
        rollback_cid(crm, cdp, CID, requested_by="ops", dry_run=True)
    assert again.value.reason == Reason.NOTHING_TO_ROLL_BACK

    # the CID can be migrated again from scratch: no ALREADY_MIGRATED, every note inserted anew
    check_preconditions(crm, cdp, RunConfig(cid=CID, company_sso_id=company, thresholds=Thresholds()), flag_cids=[CID])
    run_dag(conf)
    second = ops.cid_status(cdp, CID)
    assert second["job_id"] != first["job_id"] and second["status"] == "completed_success"
    assert second["counts"]["migrated"] == n_notes and second["counts"]["already_migrated"] == 0
    assert len(s3.list_objects(cdp_bucket, f"{company}/notes/") or {}) == objects
    assert job_store.latest_job(cdp, CID)["_id"] == second["job_id"]


def test_rollback_under_an_upper_case_company_leaves_nothing(seed_cid, run_dag, cdp, crm, cdp_bucket):
    """The run contract accepts A–F in `company_sso_id`; CDP documents keep the id as given while storage keys
    use its canonical (lower-case) form. The rollback must find and delete those same keys."""
    cid = CID + 2
    seeded = seed_cid(SeedSpec(cid=cid, notes=40, image_share=0.4, document_share=0.2, missing_file_share=0.0))
    lower = seeded["company_sso_id"]
    upper = lower.upper()
    for coll in (C.CONTACTS, C.LAUNCHPAD_USERS, C.CONTACT_NOTES):  # the company's CDP documents, as CDP holds them
        cdp[coll].update_many({"company_sso_id": lower}, {"$set": {"company_sso_id": upper}})
    try:
        run_dag({"cid": cid, "company_sso_id": upper, "batch_size": 20})
        assert ops.cid_status(cdp, cid)["status"] == "completed_success"
        objects = s3.list_objects(cdp_bucket, f"{lower}/notes/") or {}
        assert objects and migrated(cdp, upper) > 0

        done = rollback_cid(crm, cdp, cid, requested_by="ops", dry_run=False, target=cdp_bucket)
        assert done["rollback"]["objects_deleted"] == len(objects)
        assert migrated(cdp, upper) == 0
        for prefix in (f"{lower}/notes/", f"{upper}/notes/"):
            assert (s3.list_objects(cdp_bucket, prefix) or {}) == {}, prefix
    finally:
        for coll in (C.CONTACTS, C.LAUNCHPAD_USERS, C.CONTACT_NOTES):
            cdp[coll].update_many({"company_sso_id": upper}, {"$set": {"company_sso_id": lower}})
