"""Task bodies of the DAG: the Airflow edge around the steps in `run/`.

Each function reads what it needs from the Airflow context, opens the
connections, calls one step and turns reason-coded outcomes into Airflow task
states (a refusal or a halt fails the task with its reason in the message; a
page after a halt is skipped). Only `preconditions` reads the Variables: every
later task reads the run's configuration, thresholds included, from the job's
stored snapshot. Task ids live in the DAG file only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, DownstreamTasksSkipped

from notes_migration.domain.codes import AlreadyHalted, Fenced, Halted, Refused, State
from notes_migration.domain.config import CDP_S3_CONN_ID, CRM_S3_CONN_ID, RunConfig, Thresholds
from notes_migration.domain.rows import batches_of
from notes_migration.run import batch, coverage, plan, start
from notes_migration.run import validate as validation
from notes_migration.stores import alerts, job_store, settings
from notes_migration.stores.connections import cdp_database, crm_session
from notes_migration.stores.crm_source import CrmExtractFailed

log = logging.getLogger(__name__)


def _crm(thresholds: Thresholds):
    """The CRM session of a task: reads retried with backoff, then CRM_EXTRACT_FAILED (PRD §9 #2)."""
    return crm_session(retries=thresholds.crm_retries, backoff_seconds=thresholds.crm_retry_backoff_seconds)


def crm_failure_halts(job: dict, failure: CrmExtractFailed, step: str) -> AirflowFailException:
    start.halt_on_crm_failure(cdp_database(), job["job_id"], failure, step)
    log.error("run halted: %s", failure)
    return AirflowFailException(str(failure))


def preconditions() -> dict:
    ctx = get_current_context()
    cfg = RunConfig.from_params(dict(ctx["params"]), settings.thresholds())
    dag_run = ctx["dag_run"]
    with _crm(cfg.thresholds) as crm:
        try:
            return start.start_job(
                crm,
                cdp_database(),
                cfg,
                run_id=dag_run.run_id,
                triggered_by=getattr(dag_run, "triggering_user_name", None),
                flag_cids=settings.flag_cids(),
            )
        except Refused as refused:
            log.error("run refused, nothing written: %s", refused)
            raise AirflowFailException(str(refused)) from None
        except CrmExtractFailed as failed:  # before any job exists: nothing to halt, nothing written
            log.error("run not started, nothing written: %s", failed)
            raise AirflowFailException(str(failed)) from None


def coverage_preflight(job: dict) -> dict:
    with _crm(_snapshot_thresholds(job)) as crm:
        try:
            return coverage.run_coverage(crm, cdp_database(), job["job_id"])
        except CrmExtractFailed as failed:
            raise crm_failure_halts(job, failed, "coverage_preflight") from None
        except Halted as halted:
            raise AirflowFailException(str(halted)) from None


def plan_pages(job: dict) -> list[dict]:
    with _crm(_snapshot_thresholds(job)) as crm:
        try:
            return plan.plan(crm, cdp_database(), job["job_id"])
        except CrmExtractFailed as failed:
            raise crm_failure_halts(job, failed, "plan_pages") from None


def page_label(page: dict) -> str:
    """The mapped task's name in the UI: its page (or pages, for a task page of several batches)."""
    batches = batches_of(page)
    pages = f"pages {batches[0]['page_no']}–{batches[-1]['page_no']}" if len(batches) > 1 else f"page {page['page_no']}"
    return f"{pages} · ids {page['lo_id']}–{page['hi_id']} · {page['size']} rows"


@contextlib.contextmanager
def fenced_by_airflow(context: Any) -> Iterator[None]:
    """Inside a task, the steps' fence (run/start.check_fence) also asks Airflow, through the Task SDK, whether
    this task instance is still running: a run marked failed by hand fails its running task instances at once
    (the run itself stays open while its teardown is pending), so the task writes nothing more from its next
    batch or file on, without waiting for Airflow to kill its process. A deleted run has no task instance."""
    ti = context.get("ti")
    if ti is None:  # a task body called outside a task (tests): the lock alone fences it
        yield
        return
    dag_id, run_id, task_id, map_index = ti.dag_id, ti.run_id, ti.task_id, ti.map_index
    key = task_id if map_index is None or map_index < 0 else f"{task_id}_{map_index}"

    def still_running() -> bool:
        try:
            states = ti.get_task_states(dag_id=dag_id, map_index=map_index, task_ids=[task_id], run_ids=[run_id])
            return (states.get(run_id) or {}).get(key) == "running"
        except Exception as exc:  # fail closed: a task Airflow cannot answer for writes nothing more
            log.warning("could not read the state of task %s of run %s (%s): treated as stopped", key, run_id, exc)
            return False

    token = start.RUN_ALIVE.set(still_running)
    try:
        yield
    finally:
        start.RUN_ALIVE.reset(token)


def migrate_page(job: dict, page: dict, relink_task_id: str) -> None:
    """A task page's notes. When the page is the whole CID (`plan.WHOLE_CID`, most of a fleet) its files
    are relinked here too, in the same task, and its own relink task (`relink_task_id`, same map index) is
    skipped through the Execution API (the Task SDK's public DownstreamTasksSkipped: this task ends success,
    no worker starts for the skipped one). An inline relink that fails fails this task: it retries whole,
    and the relink task (all_done) still runs after its last try, so no file is stranded."""
    context = get_current_context()
    context["page_label"] = page_label(page)  # type: ignore[typeddict-unknown-key]
    with _crm(_snapshot_thresholds(job)) as crm, fenced_by_airflow(context):
        try:
            batch.migrate_page(crm, cdp_database(), job["job_id"], page)
        except AlreadyHalted as halted:
            raise AirflowSkipException(str(halted)) from None
        except CrmExtractFailed as failed:
            raise crm_failure_halts(job, failed, f"migrate_page {page['page_no']}") from None
        except Fenced as fenced:
            raise fenced_task(job, fenced) from None
        except Halted as halted:
            raise AirflowFailException(str(halted)) from None
    if not page.get(plan.WHOLE_CID):
        return
    try:
        relink_task(context, job, page, source=_bucket(CRM_S3_CONN_ID), target=_bucket(CDP_S3_CONN_ID))
    except AirflowSkipException as skipped:  # a dry run or a halted job: nothing to relink
        log.info("%s", skipped)
    log.info("CID %s is this one task page: its files were relinked here; its relink task is skipped", job["cid"])
    raise DownstreamTasksSkipped(tasks=[(relink_task_id, context["ti"].map_index)])


def _bucket(conn_id: str) -> Callable[[], Any]:
    """A bucket of an S3 connection, built on first use (a page without files builds none)."""
    from notes_migration.stores.s3_store import bucket_for

    return lambda: bucket_for(conn_id)


def relink_task(
    context: Any,
    job: dict,
    page: dict,
    *,
    source: Callable[[], Any],
    target: Callable[[], Any],
    concurrency: int | None = None,
) -> dict[str, Any]:
    """Design step 5 for one task page, inside a task: relink_attachments' body, and migrate_page's for a
    whole-CID page. Reason-coded outcomes become task states as migrate_page's do."""
    from notes_migration.run import relink

    context["page_label"] = page_label(page)
    with crm_session() as crm, fenced_by_airflow(context):  # CRM opened on first read only
        try:
            return relink.relink_page(
                crm,
                cdp_database(),
                job["job_id"],
                page,
                source=source,
                target=target,
                concurrency=concurrency,
                first_attempt=getattr(context.get("ti"), "try_number", None) == 1,  # else a retry
            )
        except relink.RelinkSkipped as skipped:
            raise AirflowSkipException(str(skipped)) from None
        except CrmExtractFailed as failed:
            raise crm_failure_halts(job, failed, f"relink_attachments {page['page_no']}") from None
        except Fenced as fenced:
            raise fenced_task(job, fenced) from None


def fenced_task(job: dict, fenced: Fenced) -> AirflowFailException:
    """A task whose run lost the CID (LOCK_LOST) fails for good (a retry would be fenced again); its job says why."""
    start.halt_fenced(cdp_database(), job["job_id"], fenced)
    return AirflowFailException(str(fenced))


def job_of_this_run(context: Any = None) -> dict:
    """The job this run recorded (its id is derived from the run), or a skip when preconditions refused
    the run and recorded none. For tasks that run on `all_done` and so cannot take the setup task's output."""
    ctx = context or get_current_context()
    job = start.job_of_run(cdp_database(), ctx["dag_run"].run_id, int(ctx["params"]["cid"]))
    if job is None:
        raise AirflowSkipException("preconditions refused this run: it recorded no job, nothing to do")
    return job


def validate() -> dict:
    """The verdict, with the job it judges and the alerts it calls for, both from the job's snapshot."""
    job = job_of_this_run()
    thresholds = _snapshot_thresholds(job)
    with _crm(thresholds) as crm:  # a CRM down here is VALIDATION_SKIPPED (PRD §9 #8), decided in validate
        try:
            verdict = validation.validate(crm, cdp_database(), job["job_id"]).as_dict()
        except Fenced as fenced:
            raise fenced_task(job, fenced) from None
    return {**verdict, "job": job, "alerts": [a.kind for a in alerts.plan(verdict, thresholds)]}


def validate_and_branch(alerts_task_id: str, finalise_task_id: str) -> list[str]:
    """validate as the DAG's alert branch: the verdict kept in XCom `verdict` (send_alerts and finalise read
    it), then the tasks to follow: the alerts only when the verdict calls for any, finalise always."""
    verdict = validate()
    get_current_context()["ti"].xcom_push(key="verdict", value=verdict)
    return [alerts_task_id, finalise_task_id] if alerts_planned(verdict) else [finalise_task_id]


def alerts_planned(verdict: dict) -> bool:
    return bool(verdict["alerts"])


def send_alerts(verdict: dict) -> list[str]:
    return alerts.dispatch(verdict["job"], verdict, _snapshot_thresholds(verdict["job"]))


def _snapshot_thresholds(job: dict):
    stored = job_store.get_job(cdp_database(), job["job_id"])
    if stored is None:
        raise LookupError(f"job {job['job_id']} not found")
    return RunConfig.from_dict(stored["config"]).thresholds


def finalise(verdict: dict) -> dict:
    """Ends the run red unless validation said completed_success, so the UI shows it at a glance."""
    if verdict["state"] != "completed_success":
        raise AirflowFailException(
            f"run ended {verdict['state']}: match_pct={verdict['match_pct']} failure_rate={verdict['failure_rate']}"
            f" halted_reason={verdict.get('halted_reason')}"
        )
    return verdict


def release_lock(job: dict) -> bool:
    """The teardown, and the judge of the run's Airflow state (on_failure_fail_dagrun makes it the run's only
    leaf): releases the CID's lock whatever happened, then fails without retrying unless the job ended
    completed_success, as finalise does. A job still in progress here was never finalised (its run was
    marked failed, a task died for good): without this the run would end success (finalise, then skipped,
    was its only other leaf) while the status says RUN_FAILED."""
    db = cdp_database()
    released = start.release(db, job["cid"], job["run_id"])
    current = job_store.get_job(db, job["job_id"])
    state = (current or {}).get("state")
    if state != State.COMPLETED_SUCCESS:
        ended = (
            "was never finalised (the run stopped before finalise)" if state == State.IN_PROGRESS else f"ended {state}"
        )
        raise AirflowFailException(
            f"job {job['job_id']} of CID {job['cid']} {ended}; lock {'released' if released else 'not held by this run'}"
        )
    return released
