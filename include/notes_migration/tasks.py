"""Task bodies of the DAG: the Airflow edge around migration.py.

Each function reads what it needs from the Airflow context, opens the
connections, calls one step and turns reason-coded outcomes into Airflow task
states (a refusal or a halt fails the task with its reason in the message; a
page after a halt is skipped).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from notes_migration import alerts, migration, settings
from notes_migration.config import RunConfig
from notes_migration.connections import cdp_database, crm_connection

log = logging.getLogger(__name__)


def run_config_from_params(params: dict[str, Any]) -> RunConfig:
    return RunConfig(
        cid=int(params["cid"]),
        company_sso_id=str(params["company_sso_id"]),
        batch_size=int(params.get("batch_size", 500)),
        include_activities=bool(params.get("include_activities", False)),
        dry_run=bool(params.get("dry_run", False)),
        force_rerun=bool(params.get("force_rerun", False)),
        thresholds=settings.thresholds(),
    )


def preconditions() -> dict:
    ctx = get_current_context()
    cfg = run_config_from_params(dict(ctx["params"]))
    dag_run = ctx["dag_run"]
    with crm_connection() as crm:
        try:
            return migration.start_job(
                crm,
                cdp_database(),
                cfg,
                run_id=dag_run.run_id,
                triggered_by=getattr(dag_run, "triggering_user_name", None),
                flag_cids=settings.flag_cids(),
            )
        except migration.Refused as refused:
            log.error("run refused, nothing written: %s", refused)
            raise AirflowFailException(str(refused)) from None


def coverage_preflight(job: dict) -> dict:
    with crm_connection() as crm:
        try:
            return migration.run_coverage(crm, cdp_database(), job["job_id"])
        except migration.Halted as halted:
            raise AirflowFailException(str(halted)) from None


def plan_pages(job: dict) -> list[dict]:
    with crm_connection() as crm:
        return migration.plan(crm, cdp_database(), job["job_id"])


def page_label(page: dict) -> str:
    return f"page {page['page_no']} · ids {page['lo_id']}–{page['hi_id']} · {page['size']} rows"


def migrate_page(job: dict, page: dict) -> dict:
    get_current_context()["page_label"] = page_label(page)
    with crm_connection() as crm:
        try:
            return migration.migrate_page(crm, cdp_database(), job["job_id"], page)
        except migration.AlreadyHalted as halted:
            raise AirflowSkipException(str(halted)) from None
        except migration.Halted as halted:
            raise AirflowFailException(str(halted)) from None


def _job_of_this_run() -> dict:
    """The job of this run, or a skip when preconditions refused it (validate runs on all_done)."""
    job = get_current_context()["ti"].xcom_pull(task_ids="preconditions")
    if not job:
        raise AirflowSkipException("preconditions refused this run: nothing to validate")
    return job


def validate() -> dict:
    job = _job_of_this_run()
    with crm_connection() as crm:
        return migration.validate(crm, cdp_database(), job["job_id"]).as_dict()


def choose_outcome(verdict: dict) -> str:
    return "send_alerts" if alerts.plan(verdict, settings.thresholds()) else "no_alert"


def send_alerts(verdict: dict) -> list[str]:
    return alerts.dispatch(_job_of_this_run(), verdict, settings.thresholds())


def finalise(verdict: dict) -> dict:
    """Ends the run red unless validation said completed_success, so the UI shows it at a glance."""
    if verdict["state"] != "completed_success":
        raise AirflowFailException(
            f"run ended {verdict['state']}: match_pct={verdict['match_pct']} failure_rate={verdict['failure_rate']}"
            f" halted_reason={verdict.get('halted_reason')}"
        )
    return verdict


def release_lock(job: dict) -> bool:
    return migration.release(cdp_database(), job["cid"], job["run_id"])
