"""The dry-run report against the real servers: a dry run changes nothing in contact_notes or CDP storage,
its relink step plans from object metadata, and its predictions equal what the real run then does.

CIDs used here: 9100–9109.
"""

from __future__ import annotations

import pytest

from devtools.seed import SeedSpec
from notes_migration.domain.config import CONTACT_NOTES
from notes_migration.ops import dry_run
from notes_migration.ops.queries import cid_status
from notes_migration.stores import job_store
from notes_migration.stores import s3_store as s3
from tests.cids import cids
from tests.helpers import task_states

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

CID = cids(__name__)[0]
# failures tolerated (no halt), so the verdict has something to predict: completed_with_errors (match < 99%)
SETTINGS = {"coverage_gate": 0.5, "max_failure_rate": 0.5}


def snapshot(cdp, company: str, crm_bucket: s3.Bucket, cdp_bucket: s3.Bucket, cid: int) -> dict:
    return {
        "notes": cdp[CONTACT_NOTES].count_documents({"company_sso_id": company}),
        "note_docs": sorted(str(d["_id"]) for d in cdp[CONTACT_NOTES].find({"company_sso_id": company}, {"_id": 1})),
        "cdp_objects": s3.list_objects(cdp_bucket, f"{company}/"),
        "crm_objects": s3.list_objects(crm_bucket, f"crm/{cid}/"),
    }


def test_dry_run_predicts_the_real_run_and_changes_nothing(seed_cid, run_dag, crm, cdp):
    spec = SeedSpec(
        cid=CID,
        notes=160,
        unmapped_person_share=0.15,
        image_share=0.3,
        audio_share=0.2,
        document_share=0.2,
        missing_file_share=0.05,
        oversized_file_share=0.03,
        disguised_file_share=0.0,  # needs the bytes: not predicted (documented)
    )
    seed_cid(spec)
    company = spec.company_sso_id
    crm_bucket, cdp_bucket = s3.bucket_for("crm_s3"), s3.bucket_for("cdp_s3")
    conf = {"cid": CID, "company_sso_id": company, "batch_size": 40}
    before = snapshot(cdp, company, crm_bucket, cdp_bucket, CID)

    dry = run_dag({**conf, "dry_run": True}, settings=SETTINGS)
    states = task_states(dry)
    assert states["relink_attachments"] == ["success"] * len(states["migrate_page"]), states  # planned, not skipped
    assert snapshot(cdp, company, crm_bucket, cdp_bucket, CID) == before  # no note, no object, nothing copied
    assert cid_status(cdp, CID)["status"] == "not_started"  # the CID's real status is untouched

    report = dry_run.latest_report(cdp, CID)
    assert report is not None and report["complete"]
    files = report["attachments"]
    assert files["to_copy"] > 0 and files["to_copy_bytes"] > 0 and files["would_fail"] > 0
    assert report["counts"]["failed"].get("CONTACT_NOT_MAPPED", 0) > 0
    assert report["eta"]["seconds"] >= 0 and report["eta"]["measured_notes_per_s"] > 0
    assert report["coverage"]["coverage_pct"] < 100

    real = run_dag(conf, settings=SETTINGS)
    status = cid_status(cdp, CID)
    job = job_store.get_job(cdp, status["job_id"])
    assert job["run_id"] == real.run_id
    counts = report["counts"]
    assert counts["would_migrate"] == status["counts"]["migrated"]
    assert counts["already_migrated"] == status["counts"]["already_migrated"] == 0
    assert counts["failed"] == status["counts"]["failed"]
    assert counts["out_of_scope"] == status["counts"]["out_of_scope"]
    assert counts["owners_unresolved"] == status["counts"]["owners_unresolved"]
    assert counts["checkins_dropped"] == status["counts"]["checkins_dropped"]
    got = status["attachments"]
    assert (files["total"], files["would_relink"], files["to_copy"], files["to_copy_bytes"]) == (
        got["total"],
        got["relinked"],
        got["copied"],
        got["bytes_copied"],
    )
    assert files["would_fail_by_reason"] == got["failed_by_reason"]
    assert files["skipped_by_reason"] == got["skipped_by_reason"]
    assert len(s3.list_objects(cdp_bucket, f"{company}/") or {}) == files["to_copy"]
    verdict = report["predicted_verdict"]
    assert verdict["state"] == status["status"] == "completed_with_errors"
    assert verdict["match_pct"] == status["validation"]["match_pct"]
    assert verdict["failure_rate"] == status["failure_rate"]

    # a dry run after the real run: everything it would write is already there
    run_dag({**conf, "dry_run": True, "force_rerun": True}, settings=SETTINGS)
    again = dry_run.latest_report(cdp, CID)
    assert again["job_id"] != report["job_id"]
    assert again["counts"]["would_migrate"] == 0
    assert again["counts"]["already_migrated"] == status["counts"]["migrated"]
    assert again["attachments"]["to_copy"] == 0 and again["attachments"]["already_in_target"] == got["relinked"]
    assert cid_status(cdp, CID)["job_id"] == status["job_id"]  # still the real job's status
