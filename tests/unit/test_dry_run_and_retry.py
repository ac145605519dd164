"""The dry-run report and the retry summary, pure: predicted verdicts, file figures, the ETA's arithmetic."""

from __future__ import annotations

import pytest

from notes_migration.domain.config import RunConfig, Thresholds
from notes_migration.ops import dry_run
from notes_migration.ops.retry import summary

COMPANY = "0b7d3c1e-5a4f-4e8b-9c2d-6e7f8a9b0c1d"


def dry_job(state="completed_success", **kw):
    cfg = RunConfig(cid=7, company_sso_id=COMPANY, dry_run=True, thresholds=kw.pop("thresholds", Thresholds()))
    return {"_id": "dry-1", "cid": 7, "company_sso_id": COMPANY, "config": cfg.as_dict(), "state": state, **kw}


def page(rows=100, migrated=90, failed=0, skipped=10, total_s=0.5):
    return {
        "rows": rows,
        "attempted": rows - skipped,
        "migrated": migrated,
        "failed": failed,
        "skipped": skipped,
        "timings_s": {"read": 0.1, "transform": 0.2, "check": 0.05, "total": total_s},
    }


FILES = {
    "files": 10,
    "relinked": 8,
    "copied": 7,
    "reused": 1,
    "failed": 1,
    "skipped": 1,
    "source_missing": 1,
    "bytes_to_copy": 29_200_000,
    "failed_by_reason": {"ATTACHMENT_DOWNLOAD_FAILED": 1},
    "skipped_by_reason": {"ATTACHMENT_TOO_LARGE": 1},
    "timings_s": {"total": 0.2},
}


@pytest.mark.parametrize(
    ("pages", "notes_total", "state", "kw", "expected"),
    [
        ([page(), page()], 180, "completed_success", {}, "completed_success"),
        # 2 of 180 fail (1.1%): over the 1% threshold
        (
            [page(migrated=89, failed=1), page(migrated=89, failed=1)],
            180,
            "completed_success",
            {},
            "completed_with_errors",
        ),
        # failures tolerated by the thresholds, but only 170 of 180 would be in CDP: match_pct 94.44 < 99
        (
            [page(migrated=85, failed=5), page(migrated=85, failed=5)],
            180,
            "completed_success",
            {"thresholds": Thresholds(max_failure_rate=0.5)},
            "completed_with_errors",
        ),
        ([page()], 180, "halted", {"halted": {"reason": "COVERAGE_BELOW_GATE"}}, "halted"),
    ],
)
def test_the_predicted_verdict(pages, notes_total, state, kw, expected):
    report = dry_run.report(dry_job(state, notes_total=notes_total, **kw), pages, [], {})
    assert report["predicted_verdict"]["state"] == expected


def test_files_and_eta_from_the_plan_and_the_page_timings():
    pages = [page(), page()]
    report = dry_run.report(dry_job(notes_total=180), pages, [FILES], {"skipped": {"ACTIVITY_OUT_OF_SCOPE": 20}})
    files = report["attachments"]
    assert (files["to_copy"], files["to_copy_bytes"], files["already_in_target"], files["would_fail"]) == (
        7,
        29_200_000,
        1,
        1,
    )
    assert files["failure_share"] == round(1 / 9, 6)
    eta = report["eta"]
    notes_s = 1.0 + 180 / dry_run.INSERT_NOTES_PER_S
    files_s = 0.2 + max(29_200_000 / dry_run.COPY_BYTES_PER_S, 7 / dry_run.COPY_FILES_PER_S)
    assert eta["notes_seconds"] == round(notes_s, 1) and eta["attachments_seconds"] == round(files_s, 1)
    assert eta["validation_seconds"] == 0.6 and eta["seconds"] == round(notes_s + files_s + 0.6)
    assert eta["measured_notes_per_s"] == 200.0
    assert report["counts"]["out_of_scope"] == {"ACTIVITY_OUT_OF_SCOPE": 20}


def test_the_retry_summary_adds_up_every_retry():
    retries = [
        {"retried": 10, "recovered": 4, "requested_by": "a"},
        {"retried": 6, "recovered": 6, "requested_by": "b"},
    ]
    assert summary(retries) == {"retries": 2, "retried": 16, "recovered": 10, "last": retries[1]}
    assert summary([]) == {"retries": 0, "retried": 0, "recovered": 0, "last": None}
