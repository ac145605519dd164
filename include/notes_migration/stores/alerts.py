"""Alerting of the validation branch (PRD §12): which alerts a verdict calls for, and sending them.

`plan` is pure (the branch reads it); `dispatch` sends through the providers'
hooks. An alert that cannot be delivered is logged and never changes the
migration's outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from notes_migration.domain.codes import State
from notes_migration.domain.config import PAGERDUTY_CONN_ID, SLACK_CONN_ID, Thresholds
from notes_migration.stores import metrics

log = logging.getLogger(__name__)

PAGERDUTY_P1 = "critical"
PAGERDUTY_P2 = "error"


@dataclass(frozen=True)
class Alert:
    channel: str  # "pagerduty" | "slack"
    severity: str
    summary: str
    kind: str


def plan(verdict: dict[str, Any], thresholds: Thresholds | None = None) -> list[Alert]:
    """Halted → P1; validation skipped (count source unavailable) → P2; finished with match_pct < gate → P2;
    attachment failures > 20% → Slack; success → none."""
    t = thresholds or Thresholds()
    state = verdict["state"]
    out: list[Alert] = []
    if state == State.HALTED:
        out.append(
            Alert(
                "pagerduty",
                PAGERDUTY_P1,
                f"CRM notes migration halted: {verdict.get('halted_reason')}"
                f" (failure_rate {verdict.get('failure_rate')})",
                "halted",
            )
        )
    elif verdict.get("validation_skipped"):
        out.append(
            Alert(
                "pagerduty",
                PAGERDUTY_P2,
                f"CRM notes migration not validated ({verdict['validation_skipped']}): the CRM count source"
                " was unavailable after retries; the run is completed_with_errors",
                "validation_skipped",
            )
        )
    elif verdict.get("match_pct") is not None and verdict["match_pct"] < t.validation_match_pct:
        out.append(
            Alert(
                "pagerduty",
                PAGERDUTY_P2,
                f"CRM notes migration finished with match_pct {verdict['match_pct']}% < {t.validation_match_pct}%",
                "validation",
            )
        )
    if state != State.HALTED and verdict.get("attachment_failure_share", 0.0) > t.attachment_alert_share:
        out.append(
            Alert(
                "slack",
                "warning",
                f"CRM notes migration: {verdict['attachment_failure_share']:.1%} of "
                f"attachments failed (> {t.attachment_alert_share:.0%})",
                "attachments",
            )
        )
    return out


SUMMARY_MAX = 1024  # PagerDuty Events v2 truncates payload.summary at 1024 characters
SEND_TIMEOUT_S = 10


def _details(job: dict[str, Any], verdict: dict[str, Any], thresholds: Thresholds) -> dict[str, Any]:
    """What on-call needs to act, without opening Airflow (no secrets, no customer text)."""
    return {
        "job_id": job["job_id"],
        "cid": job["cid"],
        "company_sso_id": job.get("company_sso_id"),
        "run_id": job.get("run_id"),
        "state": str(verdict.get("state")),
        "failure_rate": verdict.get("failure_rate"),
        "match_pct": verdict.get("match_pct"),
        "halted_reason": verdict.get("halted_reason"),
        "attachment_failure_share": verdict.get("attachment_failure_share"),
        "error_log_url": f"{thresholds.error_log_url_base.rstrip('/')}/{job['job_id']}/errors",
        "status_url": f"/crm-notes-migration/api/status?cid={job['cid']}",
    }


def _pagerduty(alert: Alert, summary: str, job: dict[str, Any], details: dict[str, Any]) -> bool:
    """One Events v2 event through the provider's hook; False when the connection says not to deliver.

    A connection extra `{"deliver": false}` (the local development connection)
    logs the event instead of calling PagerDuty's SaaS endpoint, which accepts
    only https and is never reachable from a laptop or CI."""
    from airflow.providers.pagerduty.hooks.pagerduty_events import PagerdutyEventsHook

    hook = PagerdutyEventsHook(pagerduty_events_conn_id=PAGERDUTY_CONN_ID)
    if hook.get_connection(PAGERDUTY_CONN_ID).extra_dejson.get("deliver", True) is False:
        log.warning(
            "PagerDuty delivery disabled on connection %s; not sent: %s %s %s",
            PAGERDUTY_CONN_ID,
            alert.severity,
            summary,
            details,
        )
        return False
    hook.send_event(
        summary=summary,
        severity=alert.severity,
        source="crm_notes_migration",
        component=f"cid-{job['cid']}",
        group="crm-notes-migration",
        class_type=alert.kind,
        dedup_key=f"crm_notes_migration/{job['job_id']}/{alert.kind}",
        custom_details=details,
    )
    return True


def _slack(summary: str, details: dict[str, Any]) -> bool:
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    lines = [summary] + [f"• {k}: {v}" for k, v in details.items() if v is not None]
    SlackWebhookHook(slack_webhook_conn_id=SLACK_CONN_ID, timeout=SEND_TIMEOUT_S).send(text="\n".join(lines))
    return True


def dispatch(job: dict[str, Any], verdict: dict[str, Any], thresholds: Thresholds | None = None) -> list[str]:
    """Send each planned alert; returns what was delivered.

    An alert that cannot be delivered (no connection, SaaS down, bad key) is
    logged and counted in metrics, never raised: alerting must not change the
    migration's outcome, which validation already decided."""
    t = thresholds or Thresholds()
    details = _details(job, verdict, t)
    delivered = []
    for alert in plan(verdict, t):
        summary = f"[CID {job['cid']} · job {job['job_id']}] {alert.summary}"[:SUMMARY_MAX]
        try:
            sent = (
                _pagerduty(alert, summary, job, details) if alert.channel == "pagerduty" else _slack(summary, details)
            )
        except Exception:  # an undeliverable alert must not change the migration's outcome
            log.exception("could not deliver %s alert %s for job %s", alert.channel, alert.kind, job["job_id"])
            sent = False
        metrics.alert(alert.channel, alert.kind, delivered=sent, cid=job["cid"])
        if sent:
            delivered.append(f"{alert.channel}:{alert.kind}")
    return delivered
