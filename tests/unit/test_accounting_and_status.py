"""Failure accounting, the verdict, and the PRD §8 status shapes."""

from __future__ import annotations

import datetime as dt

import pytest

from notes_migration.domain.accounting import Totals, decide_verdict, match_pct, should_halt, sum_pages
from notes_migration.domain.codes import State
from notes_migration.domain.config import RunConfig, Thresholds, parse_flag
from notes_migration.domain.status import build_status

COMPANY = "0b7d3c1e-5a4f-4e8b-9c2d-6e7f8a9b0c1d"


def test_failure_rate_excludes_skips_and_already_migrated():
    t = sum_pages([{"attempted": 100, "migrated": 90, "already_migrated": 9, "failed": 1, "skipped": 50}])
    assert t.failure_rate == 0.01


@pytest.mark.parametrize(
    "attempted, failed, batch, total, halt",
    [(500, 6, 500, 5000, True), (500, 5, 500, 5000, False), (499, 100, 500, 5000, False), (80, 2, 500, 80, True)],
)
def test_halt_needs_one_full_batch_and_more_than_one_percent(attempted, failed, batch, total, halt):
    t = Totals(attempted=attempted, failed=failed)
    assert should_halt(t, batch_size=batch, notes_total=total, max_failure_rate=0.01) is halt


def test_match_pct():
    assert match_pct(0, 0) == 100.0
    assert match_pct(200, 199) == 99.5
    assert match_pct(10, 12) == 100.0


@pytest.mark.parametrize(
    "kw, state",
    [
        (
            {"halted_reason": "FAILURE_RATE_EXCEEDED", "match": None, "failure_rate": 0.05, "mismatches": 0},
            State.HALTED,
        ),
        ({"halted_reason": None, "match": 100.0, "failure_rate": 0.0, "mismatches": 0}, State.COMPLETED_SUCCESS),
        ({"halted_reason": None, "match": 99.0, "failure_rate": 0.01, "mismatches": 0}, State.COMPLETED_SUCCESS),
        ({"halted_reason": None, "match": 98.9, "failure_rate": 0.0, "mismatches": 0}, State.COMPLETED_WITH_ERRORS),
        ({"halted_reason": None, "match": 100.0, "failure_rate": 0.011, "mismatches": 0}, State.COMPLETED_WITH_ERRORS),
        ({"halted_reason": None, "match": 100.0, "failure_rate": 0.0, "mismatches": 1}, State.COMPLETED_WITH_ERRORS),
    ],
)
def test_success_is_decided_by_validation(kw, state):
    assert decide_verdict(**kw, min_match_pct=99.0, max_failure_rate=0.01).state == state


def test_flag_parsing_is_strict():
    assert parse_flag([100, "5000", "x", None]) == {100, 5000}
    assert parse_flag("100") == frozenset() and parse_flag(None) == frozenset()


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="coverage_gat"):
        Thresholds.from_mapping({"coverage_gat": 0.5})


def job(state, **extra):
    cfg = RunConfig(cid=1, company_sso_id=COMPANY).as_dict()
    return {
        "_id": "j1",
        "cid": 1,
        "company_sso_id": COMPANY,
        "config": cfg,
        "state": state,
        "notes_total": 200,
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        **extra,
    }


def test_status_shapes_follow_prd_section_8():
    assert build_status(1, None, [], {}) == {"cid": 1, "status": "not_started"}
    pages = [{"attempted": 50, "migrated": 49, "failed": 1, "rows": 60, "skipped": 10}]
    now = dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=dt.UTC)
    s = build_status(1, job("in_progress"), pages, {}, now=now)
    assert (s["status"], s["progress_pct"], s["notes_processed"], s["notes_total"]) == ("in_progress", 25.0, 50, 200)
    assert s["throughput_notes_per_s"] == 5.0 and s["eta_seconds"] == 30
    s = build_status(1, job("halted", halted={"reason": "FAILURE_RATE_EXCEEDED", "failure_rate": 0.02}), pages, {})
    assert s["failure_rate"] == 0.02 and s["error_log_url"] == "/crm-notes-migration/api/jobs/j1/errors"
    done = job("completed_success", validation={"match_pct": 100.0, "found": 200, "expected": 200})
    s = build_status(1, done, pages, {"failed": {"CONTACT_NOT_MAPPED": 1}})
    assert s["notes_migrated"] == 200 and s["validation"]["match_pct"] == 100.0
    assert s["counts"]["failed"] == {"CONTACT_NOT_MAPPED": 1}
    s = build_status(1, job("completed_with_errors", validation={"match_pct": 90.0, "found": 180}), pages, {})
    assert s["status"] == "completed_with_errors" and "error_log_url" in s and s["validation"]["match_pct"] == 90.0
