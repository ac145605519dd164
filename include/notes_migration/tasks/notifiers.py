"""Failure and deadline notifications of the DAGs, through the Slack and PagerDuty providers' notifiers.

Never silent (PRD §12): the rollout and housekeeping DAGs page and post on failure; a migration run still going
past the PRD's 4-hour window per CID raises a Deadline Alert (notified, not killed: see `migration_deadline`).
Built at parse time from connection ids only (no connection is read until a notifier fires).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from notes_migration.domain.config import PAGERDUTY_CONN_ID, SLACK_CONN_ID

MIGRATION_WINDOW = dt.timedelta(hours=4)  # PRD: one CID's migration fits a 4-hour maintenance window


def failure_notifiers(dag_id: str) -> list[Any]:
    """on_failure_callback of a DAG: a Slack post and a PagerDuty P2 naming the run."""
    from airflow.providers.pagerduty.notifications.pagerduty import PagerdutyNotifier
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    text = f"{dag_id} run {{{{ run_id }}}} failed (see its failed tasks in Airflow)"
    return [
        SlackWebhookNotifier(slack_webhook_conn_id=SLACK_CONN_ID, text=text),
        PagerdutyNotifier(
            pagerduty_events_conn_id=PAGERDUTY_CONN_ID,
            summary=text,
            severity="error",
            source="airflow",
            component=dag_id,
            dedup_key=f"{dag_id}/{{{{ run_id }}}}",
        ),
    ]


def migration_deadline(dag_id: str) -> Any:
    """A Deadline Alert 4 h after a migration run was queued: a Slack post, the run keeps going.

    Chosen over `dagrun_timeout` + callback because a timeout fails the run (its tasks killed mid-batch)
    while the PRD asks to be told; a run that is writing is better finished (idempotent) than cut, and
    Ops decide (cancel or let it end). The callback is `past_window`, not the Slack notifier class itself:
    Airflow imports a callback when the DAG is parsed, in every task process too, and the Slack provider
    costs ~0.13 CPU-s to import (aiohttp) where this module costs nothing."""
    from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=MIGRATION_WINDOW,
        callback=AsyncCallback(
            past_window,
            kwargs={
                "slack_webhook_conn_id": SLACK_CONN_ID,
                "text": f"{dag_id} run {{{{ dag_run.run_id }}}} is past the PRD's 4-hour window per CID"
                " (still running: not stopped)",
            },
        ),
        name="crm_notes_migration_4h_window",
    )


async def past_window(context: Any = None, **kwargs: Any) -> None:
    """The Deadline Alert's callback, run by the triggerer: the Slack provider's notifier, awaited."""
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    await SlackWebhookNotifier(**kwargs, context=context)
