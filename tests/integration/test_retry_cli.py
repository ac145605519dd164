"""`python -m crm_notes_migration_ops.cli retry --job-id … [--reason …]`: the failed-record queue retried from
a terminal, through the code the API route runs (notes_migration.ops.retry.run_retry), as a real subprocess
against the real CRM (PostgreSQL), FerretDB and S3. Refusals exit 3 with the reason code and write nothing;
after a contact backfill the retry recovers exactly the backfilled persons' notes.

CID used here: 9250.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.seed import SeedSpec, backfill_contacts
from notes_migration.domain.config import CONTACT_NOTES, JOBS, NOTE_LOG, RunConfig, Thresholds
from notes_migration.run import validate
from tests.cids import cids
from tests.helpers import assert_conserved, run_steps

[CID] = cids(__name__)
ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> tuple[int, dict]:
    run = subprocess.run(
        [sys.executable, "-m", "crm_notes_migration_ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "USER": "ops-cli-test"},
    )
    assert run.stdout.strip(), run.stderr[-3000:]
    return run.returncode, json.loads(run.stdout)


@pytest.fixture(scope="module")
def failed_job(seed_cid, crm, cdp):
    """A finished real run with CONTACT_NOT_MAPPED failures tolerated (completed_with_errors), run in-process."""
    seeded = seed_cid(SeedSpec(cid=CID, notes=80, unmapped_person_share=0.2, image_share=0.3, missing_file_share=0))
    cfg = RunConfig(
        cid=CID,
        company_sso_id=seeded["company_sso_id"],
        batch_size=40,
        thresholds=Thresholds(coverage_gate=0.5, max_failure_rate=0.5),
    )
    run_id = "retry-cli-9250"
    job = run_steps(crm, cdp, cfg, run_id)
    return {**job, "company_sso_id": seeded["company_sso_id"]}


def failed_ids(cdp, job_id: str) -> set[int]:
    return {e["legacy_crm_note_id"] for e in cdp[NOTE_LOG].find({"job_id": job_id, "outcome": "failed"})}


def test_refusals_exit_3_with_the_reason_code_and_write_nothing(failed_job, cdp):
    job_id = failed_job["job_id"]
    before = (cdp[JOBS].find_one({"_id": job_id}), sorted(failed_ids(cdp, job_id)))
    cases = [
        (["--job-id", "no-such-job"], "JOB_NOT_FOUND"),
        (["--job-id", job_id, "--reason", "NOTE_TOO_LARGE"], "NOTHING_TO_RETRY"),
        (["--job-id", job_id, "--reason", "ACTIVITY_OUT_OF_SCOPE"], "RETRY_REFUSED"),
    ]
    for args, reason in cases:
        code, out = cli("retry", *args)
        assert (code, out["refused"]) == (3, reason), out
    assert (cdp[JOBS].find_one({"_id": job_id}), sorted(failed_ids(cdp, job_id))) == before


def test_a_retry_from_the_cli_recovers_exactly_the_backfilled_notes(failed_job, crm, cdp):
    job_id, company = failed_job["job_id"], failed_job["company_sso_id"]
    failed = failed_ids(cdp, job_id)
    assert len(failed) >= 4
    with crm.cursor() as cur:
        cur.execute("SELECT id, crm_person_id FROM crm_notes WHERE id = ANY(%s)", (sorted(failed),))
        person = dict(cur.fetchall())
    unmapped = sorted(set(person.values()))
    backfilled = unmapped[: len(unmapped) // 2]
    assert backfilled and backfill_contacts(cdp, company, backfilled) == len(backfilled)
    expected = {n for n, p in person.items() if p in backfilled}
    migrated = {"company_sso_id": company, "legacy_crm_note_id": {"$exists": True}}
    before = {d["legacy_crm_note_id"] for d in cdp[CONTACT_NOTES].find(migrated)}

    code, out = cli("retry", "--job-id", job_id, "--reason", "CONTACT_NOT_MAPPED")
    assert code == 0, out
    assert (out["job_id"], out["cid"], out["status"]) == (job_id, CID, "completed_with_errors")
    assert set(out["retry"]["recovered_note_ids"]) == expected
    assert out["retry"]["retried"] == len(failed) and out["retry"]["recovered"] == len(expected)
    assert out["retry"]["requested_by"] == "ops-cli-test" and out["retry"]["reason_codes"] == ["CONTACT_NOT_MAPPED"]
    assert out["totals"]["recovered"] == len(expected)
    after = {d["legacy_crm_note_id"] for d in cdp[CONTACT_NOTES].find(migrated)}
    assert after - before == expected  # exactly the backfilled persons' notes
    assert failed_ids(cdp, job_id) == failed - expected
    assert_conserved(crm, cdp, CID, job_id)

    # the rest backfilled: a retry of every reason (no --reason) empties the queue and the verdict turns success
    assert backfill_contacts(cdp, company, unmapped[len(unmapped) // 2 :]) > 0
    code, out = cli("retry", "--job-id", job_id, "--by", "someone")
    assert code == 0, out
    assert out["status"] == "completed_success" and out["retry"]["recovered"] == len(failed) - len(expected)
    assert (
        out["retry"]["requested_by"] == "someone" and out["totals"]["retried"] == len(failed) + out["retry"]["retried"]
    )
    assert failed_ids(cdp, job_id) == set()
    assert_conserved(crm, cdp, CID, job_id)
    code, out = cli("retry", "--job-id", job_id)  # nothing left
    assert (code, out["refused"]) == (3, "NOTHING_TO_RETRY")

    # validation compares the recovered notes too (with the contacts the retry wrote them with): one changed
    # in CDP is a content mismatch
    recovered = min(expected)
    cdp[CONTACT_NOTES].update_one(
        {"company_sso_id": company, "legacy_crm_note_id": recovered}, {"$set": {"contact_id": "x"}}
    )
    verdict = validate.validate(crm, cdp, job_id).as_dict()
    assert verdict["content_mismatches"] == 1 and verdict["state"] == "completed_with_errors", verdict
