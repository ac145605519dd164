"""Error logs that can be acted on: a coverage halt lists every unmapped person, attachment rows name the file,
and the status links the error log whenever anything failed. Real DAG runs, real JWTs.

CIDs used here: 9020–9021.
"""

from __future__ import annotations

import csv
import io

import pytest

from devtools.seed import SeedSpec
from notes_migration.domain.codes import Reason
from notes_migration.ops.queries import ERROR_LOG_FIELDS, SOURCE_MISSING
from notes_migration.stores import crm_source, job_store
from tests.cids import cids
from tests.plugin.plugin_support import PREFIX

COVERAGE_CID, FILES_CID = cids(__name__)


@pytest.fixture(scope="module")
def coverage_halt(seed_cid):
    return seed_cid(SeedSpec(cid=COVERAGE_CID, notes=60, unmapped_person_share=0.3))


def _status(client, auth, cid):
    resp = client.get(f"{PREFIX}/api/status", params={"cid": cid}, headers=auth)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_a_coverage_halt_lists_every_unmapped_person(client, auth, run_dag, coverage_halt, cdp, crm):
    run_dag({"cid": COVERAGE_CID, "company_sso_id": coverage_halt["company_sso_id"], "batch_size": 20})
    status = _status(client, auth, COVERAGE_CID)
    assert (status["status"], status["halted_reason"]) == ("halted", Reason.COVERAGE_BELOW_GATE)
    job = job_store.get_job(cdp, status["job_id"])
    mapped = set(job_store.load_person_map(cdp, status["job_id"]))
    expected = {p: n for p, n in crm_source.notes_per_person(crm, COVERAGE_CID, False).items() if p not in mapped}
    assert expected and job["coverage"]["persons_unmapped"] == len(expected)

    resp = client.get(status["error_log_url"], headers=auth)  # CSV by default
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert tuple(rows[0].keys()) == ERROR_LOG_FIELDS
    people = {int(r["crm_person_id"]): int(r["notes_affected"]) for r in rows if r["crm_person_id"]}
    assert people == expected  # every unmapped person, not a sample
    assert {r["reason_code"] for r in rows} == {Reason.COVERAGE_BELOW_GATE}
    assert all(r["reason"] and r["details"].startswith("CRM person") for r in rows)
    assert sum(people.values()) == job["coverage"]["notes_in_scope"] - job["coverage"]["notes_resolvable"]

    as_json = client.get(status["error_log_url"], params={"format": "json", "limit": 2}, headers=auth).json()
    assert as_json["count"] == 2 and as_json["entries"][0]["crm_person_id"] == min(expected)


def test_attachment_failures_name_the_file_and_link_the_error_log_whatever_the_state(client, auth, run_dag, seed_cid):
    seeded = seed_cid(SeedSpec(cid=FILES_CID, notes=60, image_share=0.4, document_share=0.2, missing_file_share=0.5))
    run_dag({"cid": FILES_CID, "company_sso_id": seeded["company_sso_id"], "batch_size": 20})
    status = _status(client, auth, FILES_CID)
    # missing files stay under the alert share: the CID completes successfully, with files to act on
    assert status["status"] == "completed_success" and status["attachments"]["failed"] > 0
    assert status["error_log_url"].endswith(f"/api/jobs/{status['job_id']}/errors")  # present in any final state

    out = client.get(
        status["error_log_url"], params={"format": "json", "outcome": "attachment_failed"}, headers=auth
    ).json()
    assert out["count"] == status["attachments"]["failed"]
    missing = [e for e in out["entries"] if e["reason"] == SOURCE_MISSING]
    assert missing, out["entries"][:3]
    for e in missing:
        assert e["reason_code"] == Reason.ATTACHMENT_DOWNLOAD_FAILED
        assert e["attachment_id"].split("-")[0] in ("asset", "document") and e["attachment_id"].split("-")[1].isdigit()
        assert e["file_name"] and e["source_key"].startswith(f"crm/{FILES_CID}/")
        assert e["legacy_crm_note_id"]
