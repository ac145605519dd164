"""PRD §12 alerting: which alerts a verdict calls for, delivered through the providers' hooks to local edges."""

from __future__ import annotations

import json
import logging

import pytest

from devtools.ports import free_port
from notes_migration.domain.codes import State
from notes_migration.domain.config import Thresholds
from notes_migration.ops.queries import cid_status
from notes_migration.stores import alerts
from tests.fleet import HALTED, IN_PROGRESS, PD_ROUTING_KEY, SUCCESS, WITH_ERRORS
from tests.helpers import task_state

JOB = {
    "job_id": "job-3003",
    "cid": 3003,
    "company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "run_id": "manual__x",
}


def verdict(state: State, match=None, failure_rate=0.0, attachments=0.0, reason=None) -> dict:
    return {
        "state": state.value,
        "match_pct": match,
        "failure_rate": failure_rate,
        "content_mismatches": 0,
        "attachment_failure_share": attachments,
        "halted_reason": reason,
    }


@pytest.mark.parametrize(
    ("v", "expected"),
    [
        (
            verdict(State.HALTED, failure_rate=0.08, reason="FAILURE_RATE_EXCEEDED"),
            [("pagerduty", "critical", "halted")],
        ),
        (verdict(State.HALTED, reason="COVERAGE_BELOW_GATE", attachments=0.5), [("pagerduty", "critical", "halted")]),
        (verdict(State.COMPLETED_WITH_ERRORS, match=97.5), [("pagerduty", "error", "validation")]),
        (verdict(State.COMPLETED_SUCCESS, match=100.0), []),
        (verdict(State.COMPLETED_SUCCESS, match=99.0, attachments=0.2), []),  # 20% is not "> 20%"
        (verdict(State.COMPLETED_SUCCESS, match=100.0, attachments=0.21), [("slack", "warning", "attachments")]),
        (
            verdict(State.COMPLETED_WITH_ERRORS, match=90.0, attachments=0.4),
            [("pagerduty", "error", "validation"), ("slack", "warning", "attachments")],
        ),
        (verdict(State.COMPLETED_WITH_ERRORS, match=100.0, failure_rate=0.02), []),
    ],
)
def test_plan(v, expected):
    assert [(a.channel, a.severity, a.kind) for a in alerts.plan(v, Thresholds())] == expected


def test_a_halt_pages_p1_with_job_cid_and_failure_rate(pagerduty_edge, slack_webhook):
    sent = alerts.dispatch(JOB, verdict(State.HALTED, failure_rate=0.0833, reason="FAILURE_RATE_EXCEEDED"))
    assert sent == ["pagerduty:halted"] and slack_webhook == []
    [request] = pagerduty_edge.requests
    assert request["url"] == "https://events.pagerduty.com/v2/enqueue"
    event = request["json"]
    assert event["routing_key"] == PD_ROUTING_KEY and event["event_action"] == "trigger"
    assert event["dedup_key"] == "crm_notes_migration/job-3003/halted"
    payload = event["payload"]
    assert payload["severity"] == "critical" and payload["source"] == "crm_notes_migration"
    assert "CID 3003" in payload["summary"] and "job-3003" in payload["summary"]
    assert "FAILURE_RATE_EXCEEDED" in payload["summary"] and "0.0833" in payload["summary"]
    details = payload["custom_details"]
    assert (details["job_id"], details["cid"], details["failure_rate"]) == ("job-3003", 3003, 0.0833)
    assert details["error_log_url"] == "/crm-notes-migration/api/jobs/job-3003/errors"


def test_low_match_pages_p2(pagerduty_edge):
    assert alerts.dispatch(JOB, verdict(State.COMPLETED_WITH_ERRORS, match=96.0)) == ["pagerduty:validation"]
    payload = pagerduty_edge.requests[0]["json"]["payload"]
    assert payload["severity"] == "error" and "match_pct 96.0%" in payload["summary"]
    assert payload["custom_details"]["match_pct"] == 96.0


def test_attachment_failures_go_to_slack(pagerduty_edge, slack_webhook):
    sent = alerts.dispatch(JOB, verdict(State.COMPLETED_SUCCESS, match=100.0, attachments=0.35))
    assert sent == ["slack:attachments"] and pagerduty_edge.requests == []
    [message] = slack_webhook
    assert message["path"] == "/services/T000/B000/local"
    assert "35.0% of attachments failed" in message["json"]["text"] and "CID 3003" in message["json"]["text"]


def test_success_pages_nobody(pagerduty_edge, slack_webhook):
    assert alerts.dispatch(JOB, verdict(State.COMPLETED_SUCCESS, match=100.0)) == []
    assert pagerduty_edge.requests == [] and slack_webhook == []


def test_undeliverable_alerts_are_logged_not_raised(pagerduty_edge, monkeypatch, caplog):
    pagerduty_edge.status_code = 400  # PagerDuty refuses the event
    url = f"http://127.0.0.1:{free_port()}/services/down"
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", json.dumps({"conn_type": "slackwebhook", "password": url}))
    with caplog.at_level(logging.ERROR, logger="notes_migration.stores.alerts"):
        sent = alerts.dispatch(JOB, verdict(State.COMPLETED_WITH_ERRORS, match=90.0, attachments=0.5))
    assert sent == []
    assert len(pagerduty_edge.requests) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("could not deliver pagerduty alert validation" in m for m in messages)
    assert any("could not deliver slack alert attachments" in m for m in messages)


def test_a_missing_connection_is_undeliverable_too(monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_PAGERDUTY_EVENTS", raising=False)
    with caplog.at_level(logging.ERROR, logger="notes_migration.stores.alerts"):
        assert alerts.dispatch(JOB, verdict(State.HALTED, reason="COVERAGE_BELOW_GATE")) == []
    assert "could not deliver pagerduty alert halted" in caplog.text


def test_the_local_connection_logs_instead_of_calling_the_saas(pagerduty_edge, monkeypatch, caplog):
    monkeypatch.setenv(
        "AIRFLOW_CONN_PAGERDUTY_EVENTS",
        json.dumps({"conn_type": "pagerduty_events", "password": "local-dev-routing-key", "extra": {"deliver": False}}),
    )
    with caplog.at_level(logging.WARNING, logger="notes_migration.stores.alerts"):
        assert alerts.dispatch(JOB, verdict(State.HALTED, reason="COVERAGE_BELOW_GATE")) == []
    assert pagerduty_edge.requests == []
    assert "PagerDuty delivery disabled" in caplog.text and "local-dev-routing-key" not in caplog.text


def test_real_runs_alert_on_the_validation_branch(fleet):
    """The DAG's send_alerts task, in real runs: P1 for the halt, P2 (undeliverable) for the low match, none else."""
    [p1] = fleet.pagerduty.for_cid(HALTED)
    assert p1["payload"]["severity"] == "critical"
    assert p1["payload"]["custom_details"]["failure_rate"] > 0.01
    assert p1["payload"]["custom_details"]["job_id"] in p1["payload"]["summary"]
    [p2] = fleet.pagerduty.for_cid(WITH_ERRORS)
    assert p2["payload"]["severity"] == "error" and p2["payload"]["custom_details"]["match_pct"] < 99
    assert fleet.pagerduty.for_cid(SUCCESS) == [] and fleet.pagerduty.for_cid(IN_PROGRESS) == []


def test_an_undeliverable_alert_does_not_change_the_outcome(fleet, cdp):
    """The P2 of the completed_with_errors run got HTTP 400: send_alerts still succeeded, the state stands."""
    run = fleet.runs[WITH_ERRORS]
    assert task_state(run, "send_alerts") == "success"
    assert task_state(run, "finalise") == "failed"  # red because completed_with_errors, not because of alerting
    status = cid_status(cdp, WITH_ERRORS)
    assert status["status"] == "completed_with_errors"


def test_the_4h_deadline_alert_posts_to_slack_through_its_callback(slack_webhook):
    """The migration DAG's Deadline Alert names `past_window` (a light module: Airflow imports a callback at every
    parse, task processes included); awaited as the triggerer awaits it, it posts the rendered text to Slack."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from notes_migration.domain.contract import DAG_ID
    from notes_migration.tasks.notifiers import migration_deadline, past_window

    alert = migration_deadline(DAG_ID)
    assert alert.callback.path == "notes_migration.tasks.notifiers.past_window"
    late = past_window(context={"dag_run": SimpleNamespace(run_id="manual__late")}, **alert.callback.kwargs)
    with ThreadPoolExecutor(1) as pool:  # a loop of its own, as the triggerer's (another test may run one here)
        pool.submit(asyncio.run, late).result(timeout=30)
    [message] = slack_webhook
    assert message["json"]["text"].startswith(f"{DAG_ID} run manual__late is past the PRD's 4-hour window")
