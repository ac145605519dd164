"""The error log's rows and the status's error_log_url, pure."""

from __future__ import annotations

import pytest

from notes_migration.domain.codes import AttachmentOutcome, Outcome, Reason
from notes_migration.domain.status import build_status
from notes_migration.ops.queries import SOURCE_MISSING, error_row, short_reason
from notes_migration.run.coverage import unmapped_person_entries

JOB = {
    "_id": "job-1",
    "cid": 9030,
    "company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "config": {"cid": 9030, "company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e"},
    "state": "completed_success",
    "validation": {"match_pct": 100.0, "expected": 10, "found": 10},
}


@pytest.mark.parametrize(
    "job_extra, by_outcome, linked",
    [
        ({}, {}, False),
        ({"attachments": {"failed": 20, "total": 40}}, {}, True),
        ({}, {AttachmentOutcome.FAILED.value: {"ATTACHMENT_DOWNLOAD_FAILED": 20}}, True),
        ({}, {Outcome.FAILED.value: {"CONTACT_NOT_MAPPED": 1}}, True),
        ({}, {Outcome.SKIPPED.value: {"ACTIVITY_OUT_OF_SCOPE": 3}}, False),
        ({"state": "in_progress"}, {Outcome.FAILED.value: {"NOTE_TOO_LARGE": 1}}, True),
    ],
)
def test_error_log_url_whenever_anything_failed(job_extra, by_outcome, linked):
    out = build_status(9030, {**JOB, **job_extra}, [], by_outcome)
    assert ("error_log_url" in out) is linked
    if linked:
        assert out["error_log_url"].endswith("/job-1/errors")


def test_an_attachment_row_names_the_file_and_says_why_in_short():
    entry = {
        "_id": "x",
        "job_id": "job-1",
        "legacy_crm_note_id": 77,
        "outcome": AttachmentOutcome.FAILED.value,
        "reason_code": Reason.ATTACHMENT_DOWNLOAD_FAILED.value,
        "details": "source object missing: ClientError: An error occurred (NoSuchKey) when calling GetObject",
        "file": {"ref": "asset-12", "name": "scan.png", "key": "c/notes/77/asset-12-scan.png", "s3_key": "crm/1/12"},
    }
    row = error_row(entry)
    assert (row["attachment_id"], row["file_name"], row["source_key"]) == ("asset-12", "scan.png", "crm/1/12")
    assert row["reason"] == SOURCE_MISSING and "file" not in row and "_id" not in row
    assert short_reason("ATTACHMENT_UPLOAD_FAILED", "boom") == "upload to CDP storage failed after retries"
    assert short_reason(None, None) is None and short_reason("SOMETHING_NEW", "") is None


def test_unmapped_person_rows_cover_exactly_the_unresolved_persons():
    rows = unmapped_person_entries({**JOB, "state": "halted"}, {5: 3, 6: 1, 7: 4}, {6})
    assert [(r["crm_person_id"], r["notes_affected"]) for r in rows] == [(5, 3), (7, 4)]
    assert {r["reason_code"] for r in rows} == {Reason.COVERAGE_BELOW_GATE.value}
