"""The CRM retry policy (PRD §9 #2) and the verdict/alert of a skipped validation (§9 #8), pure."""

from __future__ import annotations

import psycopg
import pytest

from notes_migration.domain.accounting import decide_verdict
from notes_migration.domain.codes import Halted, Reason, State
from notes_migration.stores import alerts
from notes_migration.stores.crm_source import CrmExtractFailed, CrmSession, _retried


class FakeConn:
    closed = False

    def close(self):
        self.closed = True


def _session(outcomes):
    """A session whose read fails with each exception of `outcomes` in turn, then returns 'ok'."""
    sleeps, opened = [], []

    def connect():
        opened.append(FakeConn())
        return opened[-1]

    session = CrmSession(connect, retries=3, backoff_seconds=0.5, sleep=sleeps.append)
    queue = list(outcomes)

    @_retried
    def read(conn, x):
        assert conn is opened[-1] and not conn.closed
        if queue:
            raise queue.pop(0)
        return f"ok {x}"

    return session, read, sleeps, opened


def test_transient_errors_are_retried_on_a_fresh_connection_with_backoff():
    session, read, sleeps, opened = _session([psycopg.OperationalError("gone"), psycopg.errors.QueryCanceled("t/o")])
    assert read(session, 7) == "ok 7"
    assert sleeps == [0.5, 1.0] and len(opened) == 3 and all(c.closed for c in opened[:2])


def test_three_retries_then_crm_extract_failed():
    errors = [psycopg.OperationalError("connection refused password=hunter2")] * 4
    session, read, sleeps, opened = _session(errors)
    with pytest.raises(CrmExtractFailed) as caught:
        read(session, 1)
    assert isinstance(caught.value, Halted) and caught.value.reason == Reason.CRM_EXTRACT_FAILED
    assert sleeps == [0.5, 1.0, 2.0] and len(opened) == 4  # 1 try + 3 retries with backoff
    assert "hunter2" not in str(caught.value) and "4 times" in str(caught.value)


def test_other_errors_are_not_retried_and_plain_connections_are_read_as_is():
    session, read, sleeps, _ = _session([ValueError("bug")])
    with pytest.raises(ValueError):
        read(session, 1)
    assert sleeps == []
    conn = FakeConn()

    @_retried
    def plain(c):
        return c

    assert plain(conn) is conn


def test_skipped_validation_is_completed_with_errors_and_alerts():
    verdict = decide_verdict(
        halted_reason=None,
        match=None,
        failure_rate=0.0,
        mismatches=0,
        min_match_pct=99.0,
        max_failure_rate=0.01,
        validation_skipped=Reason.VALIDATION_SKIPPED.value,
    )
    assert verdict.state == State.COMPLETED_WITH_ERRORS and verdict.validation_skipped == "VALIDATION_SKIPPED"
    planned = alerts.plan(verdict.as_dict())
    assert [(a.channel, a.kind) for a in planned] == [("pagerduty", "validation_skipped")]


def test_crm_extract_halt_pages_p1():
    verdict = decide_verdict(
        halted_reason=Reason.CRM_EXTRACT_FAILED.value,
        match=None,
        failure_rate=0.0,
        mismatches=0,
        min_match_pct=99.0,
        max_failure_rate=0.01,
    )
    planned = alerts.plan(verdict.as_dict())
    assert [(a.severity, a.kind) for a in planned] == [(alerts.PAGERDUTY_P1, "halted")]
    assert "CRM_EXTRACT_FAILED" in planned[0].summary
