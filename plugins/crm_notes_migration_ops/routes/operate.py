"""State changes (Bearer token only): trigger a run, retry a job's failed records, cancel a job, roll a CID back.

Every refusal is raised (Refused with its reason code) and answered by errors.py; a refusal writes nothing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from crm_notes_migration_ops import airflow_runs
from crm_notes_migration_ops.auth import Operator
from crm_notes_migration_ops.errors import (
    DAG_UNAVAILABLE,
    FORBIDDEN,
    INVALID_REQUEST,
    UNAUTHENTICATED,
    PluginRefused,
    documented,
)
from crm_notes_migration_ops.routes.common import (
    CidPath,
    JobIdPath,
    airflow_path,
    cdp,
    crm,
    ops,
    status_url,
)
from crm_notes_migration_ops.routes.schemas import CancelResponse, RetryBody, TriggerBody, TriggerResponse
from notes_migration.domain.codes import Reason, Refused, State
from notes_migration.domain.config import DAG_ID, RunConfig, job_id_for
from notes_migration.stores import settings

router = APIRouter(prefix="/api", tags=["operate"])

OPERATOR = (UNAUTHENTICATED, FORBIDDEN)  # Bearer token only, with the right to change the DAG's runs


# --------------------------------------------------------------------------- trigger


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TriggerResponse,
    summary="Validate and start a migration run for a CID",
    responses=documented(
        *OPERATOR,
        Reason.FLAG_DISABLED,
        Reason.CID_NOT_FOUND,
        Reason.ALREADY_MIGRATED,
        Reason.JOB_ALREADY_RUNNING,
        DAG_UNAVAILABLE,
    ),
)
def trigger_job(body: TriggerBody, request: Request, response: Response, user: Operator) -> Any:
    """Checks synchronously what the DAG's first task checks (flag, CID, company UUID, already migrated, a run
    holding or about to hold the CID) and only then creates a queued DAG run with the body as its conf. A refusal
    writes nothing. The DAG's first task checks again (runs triggered elsewhere, races)."""
    cfg = RunConfig.from_params(body.model_dump(), settings.thresholds())
    with crm() as conn:
        ops.check_trigger(
            conn, cdp(), cfg, flag_cids=settings.flag_cids(), active_run_ids=airflow_runs.active_run_ids(cfg.cid)
        )
    conf = body.model_dump()
    try:
        run = airflow_runs.trigger(conf, user_name=user.get_name())
    except airflow_runs.DagUnavailable as exc:
        raise PluginRefused(DAG_UNAVAILABLE, str(exc)) from None
    url = status_url(request, cfg.cid)
    response.headers["Location"] = url
    return TriggerResponse(
        job_id=job_id_for(run["run_id"], cfg.cid),
        run_id=run["run_id"],
        dag_id=DAG_ID,
        cid=cfg.cid,
        company_sso_id=cfg.company_sso_id,
        state=run["state"],
        conf=conf,
        dag_paused=airflow_runs.dag_is_paused(),
        status_url=url,
        airflow_run_url=f"{airflow_path(request)}/{airflow_runs.run_path(run['run_id'])}",
    )


# --------------------------------------------------------------------------- cancel


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CancelResponse,
    summary="Cancel a migration job: halt it (CANCELLED), stop its DAG run, release the CID's lock",
    responses=documented(*OPERATOR, Reason.JOB_NOT_FOUND, Reason.JOB_ALREADY_FINISHED),
)
def cancel_job(job_id: JobIdPath, request: Request, user: Operator) -> Any:
    """The job is set halted with reason CANCELLED first, so pages that have not started write nothing; then the
    DAG run is marked failed through Airflow's own machinery (as the REST API's PATCH dagRuns does), and the lock
    is released. 202: a batch already inserting finishes after the answer. An unknown job (404 JOB_NOT_FOUND) or
    one that already ended (409 JOB_ALREADY_FINISHED) writes nothing. Bearer token only, with the right to change
    the DAG's runs."""
    from notes_migration.ops import cancel

    db = cdp()
    who = user.get_name()
    try:
        job = cancel.cancellable_job(db, job_id)
    except Refused as refused:
        found = _cancelled_before_start(db, job_id, who) if refused.reason == Reason.JOB_NOT_FOUND else None
        if found is None:
            raise
        job = found
    else:
        cancel.halt_cancelled(db, job, cancelled_by=who)  # first: pages not yet started now write nothing
    try:
        run = airflow_runs.mark_failed(job["run_id"])
    except airflow_runs.DagUnavailable as exc:  # the job is halted anyway: later pages and the relink skip
        run = {"run_id": job["run_id"], "error": str(exc)}
    released = cancel.release_job_lock(db, job)
    return CancelResponse(
        job_id=job_id,
        cid=job["cid"],
        status=State.HALTED.value,
        halted_reason=Reason.CANCELLED.value,
        cancelled_by=who,
        airflow_run=run,
        lock_released=released is not None,
        status_url=status_url(request, job["cid"]),
    )


def _cancelled_before_start(db: Any, job_id: str, who: str) -> dict[str, Any] | None:
    """The id a trigger returned, whose run has not recorded its job yet: a CANCELLED record under that id makes
    the run's preconditions refuse it. None when no queued or running run has that job id."""
    from notes_migration.ops import cancel

    run = airflow_runs.active_run_of_job(job_id)
    if run is None:
        return None
    record = cancel.cancel_before_start(db, job_id=job_id, run_id=run["run_id"], conf=run["conf"], cancelled_by=who)
    if record is None:  # the run recorded its job meanwhile: cancel that job as usual
        job = cancel.cancellable_job(db, job_id)
        cancel.halt_cancelled(db, job, cancelled_by=who)
        return job
    return record


# --------------------------------------------------------------------------- rollback of one CID


@router.post(
    "/cids/{cid}/rollback",
    summary="Roll back one CID: remove exactly the notes its migrations inserted, and their copied files",
    description="`dry_run=true` (the default) reports what would be removed and writes nothing; `dry_run=false` "
    "deletes the notes of the CID's audit map (scoped to the company) and their objects in CDP storage, records "
    "the rollback (who, when, counts), marks the audit entries rolled back (they are kept) and lets the CID be "
    "migrated again. Refused, writing nothing, when any of those notes changed in CDP after migration (409 "
    "ROLLBACK_REFUSED, listed in `changed_in_cdp`), a run holds the CID (409 JOB_ALREADY_RUNNING) or nothing is "
    "left to roll back (404 NOTHING_TO_ROLL_BACK). Bearer token only.",
    responses=documented(*OPERATOR, Reason.NOTHING_TO_ROLL_BACK, Reason.ROLLBACK_REFUSED, Reason.JOB_ALREADY_RUNNING),
)
def rollback_cid(
    cid: CidPath,
    user: Operator,
    dry_run: Annotated[bool, Query(description="default true: report only, write nothing")] = True,
) -> Any:
    with crm() as conn:
        report = ops.rollback_answer(conn, cdp(), cid, requested_by=user.get_name(), execute=not dry_run)
    return JSONResponse(jsonable_encoder(report))


# --------------------------------------------------------------------------- failed-record retry (OQ-3)


@router.post(
    "/jobs/{job_id}/retry",
    summary="Retry a job's failed-record queue (all of it, or by reason code) and recompute its verdict",
    description="Reads only the queued note ids from the CRM, resolves their persons afresh (e.g. after a contact "
    "backfill), inserts what now succeeds, moves recovered notes out of the queue (audited, counted migrated), "
    "relinks their files and re-runs validation. Holds the CID's lock while it runs, like a run; runs inside the "
    "request (queues are small: a run halts above 1% failures). Refused, writing nothing: unknown job (404 "
    "JOB_NOT_FOUND), job still running or the CID locked (409 JOB_ALREADY_RUNNING), no failed note of those "
    "reasons within the retention window (409 NOTHING_TO_RETRY), a dry-run, halted or superseded job, reason codes "
    "that are not note failures, or a queue too large (422 RETRY_REFUSED). Bearer token only.",
    responses=documented(
        *OPERATOR,
        Reason.JOB_NOT_FOUND,
        Reason.JOB_ALREADY_RUNNING,
        Reason.NOTHING_TO_RETRY,
        Reason.RETRY_REFUSED,
        INVALID_REQUEST,
    ),
)
def retry_job(job_id: JobIdPath, request: Request, user: Operator, body: RetryBody | None = None) -> Any:
    reasons = body.reason_codes if body else None
    answer = ops.retry_answer(cdp(), job_id, reasons, requested_by=user.get_name())
    answer["status_url"] = status_url(request, answer["cid"])
    return JSONResponse(jsonable_encoder(answer))
