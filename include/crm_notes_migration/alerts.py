"""Alerting of the validation branch (PRD §12): which alerts a verdict calls for, and sending them.

`plan` is pure (the branch reads it); `dispatch` sends through the providers'
hooks. An alert that cannot be delivered is logged and never changes the
migration's outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from crm_notes_migration.codes import State
from crm_notes_migration.config import PAGERDUTY_CONN_ID, SLACK_CONN_ID, Thresholds

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
    """Halted → P1; finished with match_pct < gate → P2; attachment failures > 20% → Slack; success → none."""
    t = thresholds or Thresholds()
    state = verdict["state"]
    out: list[Alert] = []
    if state == State.HALTED:
        out.append(Alert("pagerduty", PAGERDUTY_P1, f"CRM notes migration halted: {verdict.get('halted_reason')}"
                         f" (failure_rate {verdict.get('failure_rate')})", "halted"))
    elif verdict.get("match_pct") is not None and verdict["match_pct"] < t.validation_match_pct:
        out.append(Alert("pagerduty", PAGERDUTY_P2,
                         f"CRM notes migration finished with match_pct {verdict['match_pct']}% < {t.validation_match_pct}%",
                         "validation"))
    if state != State.HALTED and verdict.get("attachment_failure_share", 0.0) > t.attachment_alert_share:
        out.append(Alert("slack", "warning", f"CRM notes migration: {verdict['attachment_failure_share']:.1%} of "
                         f"attachments failed (> {t.attachment_alert_share:.0%})", "attachments"))
    return out


def dispatch(job: dict[str, Any], verdict: dict[str, Any], thresholds: Thresholds | None = None) -> list[str]:
    """Send each planned alert; returns what was delivered (failures are logged, not raised)."""
    delivered = []
    details = {"job_id": job["job_id"], "cid": job["cid"], "company_sso_id": job.get("company_sso_id"),
               "failure_rate": verdict.get("failure_rate"), "match_pct": verdict.get("match_pct"),
               "halted_reason": verdict.get("halted_reason")}
    for alert in plan(verdict, thresholds):
        summary = f"[CID {job['cid']} · job {job['job_id']}] {alert.summary}"
        try:
            if alert.channel == "pagerduty":
                from airflow.providers.pagerduty.hooks.pagerduty_events import PagerdutyEventsHook

                PagerdutyEventsHook(pagerduty_events_conn_id=PAGERDUTY_CONN_ID).send_event(
                    summary=summary, severity=alert.severity, source="crm_notes_migration",
                    dedup_key=f"crm_notes_migration/{job['job_id']}/{alert.kind}", custom_details=details,
                )
            else:
                from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

                SlackWebhookHook(slack_webhook_conn_id=SLACK_CONN_ID).send(text=summary)
            delivered.append(f"{alert.channel}:{alert.kind}")
        except Exception:  # an undeliverable alert must not change the migration's outcome
            log.exception("could not deliver %s alert %s for job %s", alert.channel, alert.kind, job["job_id"])
    return delivered
