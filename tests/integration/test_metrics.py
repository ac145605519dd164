"""Airflow metrics of the migration: emitted from real runs, never able to fail a task."""

from __future__ import annotations

import datetime as dt

from notes_migration.ops.queries import cid_status
from notes_migration.stores import metrics
from tests.fleet import HALTED, SUCCESS, WITH_ERRORS, StatsRecorder


def test_a_real_run_emits_counters_and_batch_timers(fleet, cdp):
    status = cid_status(cdp, SUCCESS)
    stats = fleet.stats
    assert stats.total(metrics.NOTES_MIGRATED, SUCCESS) == status["counts"]["migrated"] > 0
    assert stats.total(metrics.NOTES_FAILED, SUCCESS) == 0
    assert stats.total(metrics.NOTES_SKIPPED, SUCCESS) == sum(status["counts"]["out_of_scope"].values()) - status[
        "counts"
    ]["out_of_scope"].get("NOT_A_PERSON_NOTE", 0)
    pages = status["counts"]["pages_done"]
    durations = stats.timings(metrics.BATCH_DURATION, SUCCESS)
    assert len(durations) == pages >= 2 and all(
        isinstance(d, dt.timedelta) and d.total_seconds() > 0 for d in durations
    )
    assert len(stats.timings(f"{metrics.BATCH_DURATION}.write", SUCCESS)) == pages
    assert stats.total(metrics.RUNS_STARTED, SUCCESS) == 1
    finished = [c for c in stats.calls if c[1] == metrics.RUNS_FINISHED and c[3].get("cid") == str(SUCCESS)]
    assert [c[3]["state"] for c in finished] == ["completed_success"]


def test_failures_halts_and_alerts_are_counted_by_reason(fleet):
    stats = fleet.stats
    failed = [c for c in stats.calls if c[1] == metrics.NOTES_FAILED and c[3].get("cid") == str(HALTED)]
    assert failed and {c[3]["reason_code"] for c in failed} == {"CONTACT_NOT_MAPPED"}
    halted = [c for c in stats.calls if c[1] == metrics.RUNS_HALTED and c[3].get("cid") == str(HALTED)]
    assert [c[3]["reason_code"] for c in halted] == ["FAILURE_RATE_EXCEEDED"]
    assert stats.total(metrics.ALERTS_SENT, HALTED) == 1
    assert stats.total(metrics.ALERTS_UNDELIVERED, WITH_ERRORS) == 1


def test_attachment_failures_counter():
    rec = StatsRecorder()
    orig = metrics._stats
    metrics._stats = lambda: rec
    try:
        metrics.attachments_failed(3001, "ATTACHMENT_DOWNLOAD_FAILED", 3)
    finally:
        metrics._stats = orig
    assert rec.calls == [
        (
            "incr",
            metrics.ATTACHMENTS_FAILED,
            3,
            {"dag_id": "crm_notes_migration", "cid": "3001", "reason_code": "ATTACHMENT_DOWNLOAD_FAILED"},
        )
    ]


def test_a_broken_metrics_backend_never_raises(monkeypatch, caplog):
    class Broken:
        def incr(self, *a, **k):
            raise OSError("statsd down")

        def timing(self, *a, **k):
            raise OSError("statsd down")

    monkeypatch.setattr(metrics, "_stats", lambda: Broken())
    metrics.page_completed({"cid": 1, "migrated": 3, "failed_by_reason": {"X": 1}, "timings_s": {"total": 0.1}})
    assert "could not emit metric" in caplog.text


def test_the_default_backend_is_airflows_stats():
    from airflow.sdk.observability import stats

    assert metrics._stats() is stats
    metrics.run_started(3001)  # no backend configured: Airflow's NoStatsLogger, must not raise


def test_attachment_relink_metrics_of_a_real_run(fleet, cdp):
    status = cid_status(cdp, SUCCESS)
    figures = status.get("attachments") or {}
    assert figures.get("total", 0) > 0, "the seeded CID has files to relink"
    assert fleet.stats.total(metrics.ATTACHMENTS_RELINKED, SUCCESS) == figures["relinked"]
    assert fleet.stats.total(metrics.ATTACHMENTS_FAILED, SUCCESS) == figures.get("failed", 0)
    assert len(fleet.stats.timings(metrics.RELINK_DURATION, SUCCESS)) == status["counts"]["pages_done"]
