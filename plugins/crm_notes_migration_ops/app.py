"""The Ops REST API and UI page of the migration, a FastAPI app mounted by the Airflow plugin.

Every route authenticates with Airflow's JWT (auth.py). Routes parse the request,
call one query of `notes_migration.ops.queries` and map its result or reason code to HTTP.

Mounted at `/crm-notes-migration` on the Airflow API server; see docs/api.md.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field

from crm_notes_migration_ops import URL_PREFIX, airflow_runs
from crm_notes_migration_ops.auth import (
    UNAUTHENTICATED,
    Operator,
    Reader,
    Refusal,
    bearer_scheme,
    cookie_scheme,
    reader,
)
from notes_migration.domain import contract
from notes_migration.domain.codes import OUTCOME_FILTERS, Reason, Refused, State
from notes_migration.domain.config import DAG_ID, RunConfig, job_id_for
from notes_migration.stores import settings
from notes_migration.tasks.lazy import lazy_import

# Loaded when a route first uses them, not when Airflow loads the plugin (they bring pymongo, psycopg …).
ops = lazy_import("notes_migration.ops.queries")
preflight = lazy_import("notes_migration.run.start")

UI_REFRESH_SECONDS = 15
API_VERSION = "1.0.0"

DESCRIPTION = """
Ops surface of the `crm_notes_migration` DAG: the Monitor API of PRD §8, the
reason-coded error log, the Person→Contact coverage report and a trigger that
validates before it creates the DAG run.

**Authentication**: an Airflow JWT (`POST /auth/token` on the Airflow API
server) in `Authorization: Bearer <token>`. Read routes also accept the Airflow
UI's session cookie; `POST /api/jobs` accepts only the header. Read routes need
read access to the DAG's runs, the trigger needs the right to create them.
Anonymous or invalid token → 401; authenticated without the permission → 403.
"""

app = FastAPI(
    title="CRM Notes Migration — Ops API",
    version=API_VERSION,
    description=DESCRIPTION,
    # Served below by authenticated routes instead of FastAPI's anonymous defaults.
    openapi_url=None,
    docs_url=None,
    redoc_url=None,
)


OutcomeFilter = StrEnum("OutcomeFilter", {name: name for name in OUTCOME_FILTERS})  # type: ignore[misc]

CidQuery = Annotated[int, Query(ge=1, description="CRM organization id (CID)")]
UuidQuery = Annotated[str, Query(pattern=contract.UUID_PATTERN, description="CDP company UUID")]

# HTTP status of each refusal of the trigger endpoint (the DAG's first task refuses with the same codes).
REFUSAL_HTTP_STATUS: dict[Reason, int] = {
    Reason.FLAG_DISABLED: 403,
    Reason.CID_NOT_FOUND: 404,
    Reason.ALREADY_MIGRATED: 409,
    Reason.JOB_ALREADY_RUNNING: 409,
    Reason.INVALID_COMPANY_SSO_ID: 422,
}


# --------------------------------------------------------------------------- external systems


@contextmanager
def _crm() -> Iterator[Any]:
    from notes_migration.stores.connections import crm_connection

    with crm_connection() as conn:
        yield conn


def _cdp() -> Any:
    from notes_migration.stores.connections import cdp_database

    return cdp_database()


def _refusal(refused: Refused) -> JSONResponse:
    code = REFUSAL_HTTP_STATUS.get(refused.reason, status.HTTP_409_CONFLICT)
    message = str(refused).split(": ", 1)[-1]
    return JSONResponse(status_code=code, content={"detail": message, "reason_code": refused.reason.value})


def _not_found_cid(cid: int) -> JSONResponse:
    return JSONResponse(
        status_code=404,
        content={"detail": f"CID {cid} is not an organization of the CRM", "reason_code": Reason.CID_NOT_FOUND.value},
    )


def _mount_path(request: Request) -> str:
    """This app's path prefix as the client sees it (includes Airflow's base URL path)."""
    return request.scope.get("root_path", "").rstrip("/") or URL_PREFIX


def _airflow_path(request: Request) -> str:
    mount = _mount_path(request)
    return mount[: -len(URL_PREFIX)] if mount.endswith(URL_PREFIX) else ""


# --------------------------------------------------------------------------- status


class StatusResponse(BaseModel):
    """PRD §8: `status` decides which fields are present (extra fields are the counts behind them)."""

    model_config = ConfigDict(extra="allow")

    cid: int
    status: State
    job_id: str | None = Field(None, description="absent when not_started")
    progress_pct: float | None = Field(None, description="in_progress")
    notes_processed: int | None = Field(None, description="in_progress")
    notes_total: int | None = Field(None, description="in_progress")
    throughput_notes_per_s: float | None = Field(None, description="in_progress")
    eta_seconds: int | None = Field(None, description="in_progress")
    failure_rate: float | None = Field(None, description="halted, completed_with_errors")
    error_log_url: str | None = Field(None, description="halted, completed_with_errors")
    notes_migrated: int | None = Field(None, description="completed_success, completed_with_errors")
    validation: dict[str, Any] | None = Field(None, description="completed_*: {match_pct, expected, found, …}")
    counts: dict[str, Any] | None = Field(None, description="by outcome and reason")
    attachments: dict[str, Any] | None = Field(None, description="attachment figures of the relink step")


@app.get(
    "/api/status",
    summary="Status of a CID's migration (PRD §8 Monitor API)",
    responses={
        200: {"model": StatusResponse},
        404: {"model": Refusal, "description": "CID unknown to the CRM"},
        **UNAUTHENTICATED,
    },
    tags=["monitor"],
)
def get_status(
    cid: CidQuery,
    user: Reader,
    dry_run: Annotated[
        bool, Query(description="true: the CID's latest dry-run report instead (its real status is unchanged)")
    ] = False,
) -> Any:
    with _crm() as crm:
        try:
            if dry_run:
                from notes_migration.ops import dry_run as dry
                from notes_migration.stores import crm_source

                if not crm_source.cid_exists(crm, cid):
                    raise ops.UnknownCid(cid)
                return JSONResponse(jsonable_encoder(dry.dry_run_status(_cdp(), cid)))
            runs = airflow_runs.runs_by_cid(cid).get(cid)
            return JSONResponse(jsonable_encoder(ops.status_of(crm, _cdp(), cid, runs)))
        except ops.UnknownCid:
            return _not_found_cid(cid)


@app.get(
    "/api/jobs", summary="Fleet: the latest job of every CID that has one", tags=["monitor"], responses=UNAUTHENTICATED
)
def list_jobs(user: Reader) -> dict[str, Any]:
    rows = ops.fleet(_cdp(), airflow_runs.runs_by_cid())
    return {"jobs": rows, "counts": ops.state_counts(rows)}


@app.get(
    "/api/jobs/{job_id}/errors",
    summary="A job's reason-coded error log (CSV by default, JSON on request)",
    description="Rows: `legacy_crm_note_id`, `reason_code`, `details`, `outcome`, `created_at`, a short `reason`; "
    "a COVERAGE_BELOW_GATE halt lists every unmapped person (`crm_person_id`, `notes_affected`); attachment rows "
    "carry `attachment_id`, `file_name` and `source_key`. "
    "`outcome=errors` (default) lists run errors, note failures and attachment failures; `all` adds the skips. "
    "JSON with `format=json` or `Accept: application/json`.",
    responses={
        200: {"content": {"text/csv": {}, "application/json": {}}},
        404: {"model": Refusal, "description": "no such job"},
        **UNAUTHENTICATED,
    },
    tags=["monitor"],
)
def get_errors(
    request: Request,
    job_id: Annotated[str, Path(max_length=200)],
    user: Reader,
    format: Annotated[Literal["csv", "json"] | None, Query(description="default csv")] = None,
    outcome: OutcomeFilter = OutcomeFilter.errors,  # type: ignore[attr-defined]
    limit: Annotated[int, Query(ge=0, le=1_000_000, description="0: no limit")] = 0,
) -> Response:
    outcome_name = OutcomeFilter(outcome).value
    with _crm() as crm:  # a coverage halt lists its unmapped persons from the CRM's notes per person
        entries = ops.error_log(_cdp(), job_id, outcome_name, limit=limit, crm=crm)
    if entries is None:
        return JSONResponse(status_code=404, content={"detail": f"job {job_id} not found"})
    wants_json = format == "json" or (format is None and "application/json" in request.headers.get("accept", ""))
    if wants_json:
        return JSONResponse({"job_id": job_id, "outcome": outcome_name, "count": len(entries), "entries": entries})
    filename = f"crm-notes-migration-{job_id}-{outcome_name}.csv"
    return Response(
        ops.error_log_csv(entries),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@app.get(
    "/api/coverage",
    summary="Person→Contact coverage report of a CID (OQ-2), on demand, before any run",
    responses={404: {"model": Refusal, "description": "CID unknown to the CRM"}, **UNAUTHENTICATED},
    tags=["monitor"],
)
def get_coverage(cid: CidQuery, company_sso_id: UuidQuery, user: Reader, include_activities: bool = False) -> Any:
    from notes_migration.stores import crm_source

    with _crm() as crm:
        if not crm_source.cid_exists(crm, cid):
            return _not_found_cid(cid)
        gate = settings.thresholds().coverage_gate
        return preflight.coverage_report(
            crm, _cdp(), cid, company_sso_id, include_activities=include_activities, gate=gate
        )


# --------------------------------------------------------------------------- trigger


TriggerBody: Any = contract.trigger_model()  # the run contract's parameters, bounds and defaults (contract.py)
TriggerBody.model_config["json_schema_extra"] = {
    "examples": [{"cid": 3001, "company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e"}]
}


class TriggerResponse(BaseModel):
    job_id: str = Field(description="the migration job id the run will record (deterministic per run and CID)")
    run_id: str
    dag_id: str
    cid: int
    company_sso_id: str
    state: str = Field(description="the DAG run's state (queued)")
    conf: dict[str, Any]
    dag_paused: bool | None = Field(description="true: the run waits until the DAG is unpaused")
    status_url: str
    airflow_run_url: str


@app.post(
    "/api/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TriggerResponse,
    summary="Validate and start a migration run for a CID",
    description="Checks synchronously what the DAG's first task checks (flag, CID, company UUID, already "
    "migrated, a run holding or about to hold the CID) and only then creates a queued DAG run with the body as "
    "its conf. A refusal writes nothing. The DAG's first task checks again (runs triggered elsewhere, races).",
    responses={
        403: {"model": Refusal, "description": "FLAG_DISABLED (or no permission to trigger)"},
        404: {"model": Refusal, "description": "CID_NOT_FOUND"},
        409: {"model": Refusal, "description": "ALREADY_MIGRATED or JOB_ALREADY_RUNNING"},
        401: UNAUTHENTICATED[401],
        503: {"model": Refusal, "description": "the DAG is not available in Airflow"},
    },
    tags=["operate"],
)
def trigger_job(body: TriggerBody, request: Request, response: Response, user: Operator) -> Any:
    cfg = RunConfig.from_params(body.model_dump(), settings.thresholds())
    with _crm() as crm:
        try:
            ops.check_trigger(
                crm, _cdp(), cfg, flag_cids=settings.flag_cids(), active_run_ids=airflow_runs.active_run_ids(cfg.cid)
            )
        except Refused as refused:
            return _refusal(refused)
    conf = body.model_dump()
    try:
        run = airflow_runs.trigger(conf, user_name=user.get_name())
    except airflow_runs.DagUnavailable as exc:
        return JSONResponse(status_code=503, content={"detail": str(exc)})
    status_url = f"{_mount_path(request)}/api/status?cid={cfg.cid}"
    response.headers["Location"] = status_url
    return TriggerResponse(
        job_id=job_id_for(run["run_id"], cfg.cid),
        run_id=run["run_id"],
        dag_id=DAG_ID,
        cid=cfg.cid,
        company_sso_id=cfg.company_sso_id,
        state=run["state"],
        conf=conf,
        dag_paused=airflow_runs.dag_is_paused(),
        status_url=status_url,
        airflow_run_url=f"{_airflow_path(request)}/{airflow_runs.run_path(run['run_id'])}",
    )


# --------------------------------------------------------------------------- UI page


@cache
def _templates() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("crm_notes_migration_ops", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    # a figure not there yet (None, or a key a row does not have: jinja's Undefined) shows as a dash
    env.filters["pct"] = lambda v, digits=1: "—" if _missing(v) else f"{float(v):.{digits}f}%"
    env.filters["rate"] = lambda v: "—" if _missing(v) else f"{100.0 * float(v):.2f}%"
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    env.filters["when"] = _when
    return env


def _missing(value: Any) -> bool:
    from jinja2 import Undefined

    return value is None or isinstance(value, Undefined)


def _when(value: Any) -> str:
    if not value:
        return "—"
    text = str(value)
    return text.replace("T", " ")[:19] + " UTC" if "T" in text else text


def _page(
    request: Request, body: str, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> HTMLResponse:
    return HTMLResponse(
        body, status_code=status_code, headers={**_page_headers(request.state.nonce), **(headers or {})}
    )


def _page_headers(nonce: str) -> dict[str, str]:
    csp = (
        "default-src 'none'; img-src 'self' data:; "
        f"style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


@app.get("/", include_in_schema=False)
async def root(request: Request, user: Reader) -> RedirectResponse:
    return RedirectResponse(f"{_mount_path(request)}/ui", status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@app.get(
    "/ui",
    response_class=HTMLResponse,
    summary="The Ops page (nav view of the Airflow UI)",
    tags=["ui"],
    responses=UNAUTHENTICATED,
)
async def ui(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie_token: Annotated[str | None, Depends(cookie_scheme)],
    cid: Annotated[str | None, Query(max_length=12, description="show one CID's detail")] = None,
) -> HTMLResponse:
    request.state.nonce = secrets.token_urlsafe(16)
    env = _templates()
    try:
        await reader(credentials, cookie_token)
    except HTTPException as exc:
        body = env.get_template("denied.html").render(
            status_code=exc.status_code, detail=exc.detail, login_url=_login_url(request), nonce=request.state.nonce
        )
        return _page(request, body, exc.status_code, exc.headers)
    from starlette.concurrency import run_in_threadpool

    context = await run_in_threadpool(_ui_context, cid)
    body = env.get_template("ui.html").render(
        nonce=request.state.nonce,
        refresh_seconds=UI_REFRESH_SECONDS,
        dag_id=DAG_ID,
        run_path=airflow_runs.run_path,
        **context,
    )
    return _page(request, body)


def _login_url(request: Request) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    try:
        return get_auth_manager().get_url_login()
    except Exception:  # an auth manager without a login page: Airflow's root shows its own
        return f"{_airflow_path(request)}/"


def _rollout_context(db: Any) -> dict[str, Any]:
    """The Ops page's rollouts (the newest one in full, with its per-CID progress) and weekly aggregates."""
    from notes_migration.ops import rollout

    rollouts = rollout.list_rollouts(db, limit=10, run_states=airflow_runs.rollout_run_states)
    latest = rollout.rollout_view(db, rollouts[0]["rollout_id"], airflow_runs.rollout_run_states) if rollouts else None
    return {"rollouts": rollouts, "rollout": latest, "weeks": rollout.list_weekly(db, limit=8)}


def _ui_context(cid_param: str | None) -> dict[str, Any]:
    db = _cdp()
    runs = airflow_runs.runs_by_cid()
    rows = ops.fleet(db, runs)
    context: dict[str, Any] = {
        "rows": rows,
        "counts": ops.state_counts(rows),
        "detail": None,
        "lookup": cid_param,
        "lookup_error": None,
        "dry_run": None,
        "states": [s.value for s in State],
        "now": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        **_rollout_context(db),
    }
    if cid_param:
        if not cid_param.isdigit() or int(cid_param) < 1:
            context["lookup_error"] = "A CID is a positive whole number."
            return context
        with _crm() as crm:
            try:
                cid = int(cid_param)
                context["detail"] = jsonable_encoder(ops.cid_detail(crm, db, cid, runs.get(cid)))
                from notes_migration.ops import dry_run

                context["dry_run"] = jsonable_encoder(dry_run.latest_report(db, cid))
            except ops.UnknownCid:
                context["lookup_error"] = f"CID {cid_param} is not an organization of the CRM."
    return context


# --------------------------------------------------------------------------- OpenAPI, behind the same auth


@app.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, user: Reader) -> JSONResponse:
    """The app's OpenAPI document; `servers` carries the mount path so "try it out" calls the right URLs."""
    return JSONResponse({**app.openapi(), "servers": [{"url": _mount_path(request)}]})


@app.get("/docs", include_in_schema=False)
def docs(request: Request, user: Reader) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=f"{_mount_path(request)}/openapi.json", title=f"{app.title} — docs")


# --------------------------------------------------------------------------- cancel

CANCEL_REFUSAL_HTTP_STATUS: dict[Reason, int] = {Reason.JOB_NOT_FOUND: 404, Reason.JOB_ALREADY_FINISHED: 409}


class CancelResponse(BaseModel):
    job_id: str
    cid: int
    status: str = Field(description="halted")
    halted_reason: str = Field(description="CANCELLED")
    cancelled_by: str
    airflow_run: dict[str, Any] | None = Field(
        description="the DAG run: state before and after (failed); null when Airflow has no such run"
    )
    lock_released: bool
    status_url: str


@app.post(
    "/api/jobs/{job_id}/cancel",
    response_model=CancelResponse,
    summary="Cancel a migration job: halt it (CANCELLED), stop its DAG run, release the CID's lock",
    description="The job is set halted with reason CANCELLED first, so pages that have not started write "
    "nothing; then the DAG run is marked failed through Airflow's own machinery (as the REST API's PATCH "
    "dagRuns does), and the lock is released. An unknown job (404 JOB_NOT_FOUND) or one that already ended "
    "(409 JOB_ALREADY_FINISHED) writes nothing. Bearer token only, with the right to change the DAG's runs.",
    responses={
        404: {"model": Refusal, "description": "JOB_NOT_FOUND"},
        409: {"model": Refusal, "description": "JOB_ALREADY_FINISHED"},
        401: UNAUTHENTICATED[401],
        403: UNAUTHENTICATED[403],
    },
    tags=["operate"],
)
def cancel_job(job_id: Annotated[str, Path(max_length=200)], request: Request, user: Operator) -> Any:
    from notes_migration.ops import cancel

    db = _cdp()
    try:
        job = cancel.cancellable_job(db, job_id)
    except Refused as refused:
        message = str(refused).split(": ", 1)[-1]
        return JSONResponse(
            status_code=CANCEL_REFUSAL_HTTP_STATUS.get(refused.reason, 409),
            content={"detail": message, "reason_code": refused.reason.value},
        )
    who = user.get_name()
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
        status_url=f"{_mount_path(request)}/api/status?cid={job['cid']}",
    )


# --------------------------------------------------------------------------- rollback of one CID

ROLLBACK_REFUSAL_HTTP_STATUS: dict[Reason, int] = {
    Reason.NOTHING_TO_ROLL_BACK: 404,
    Reason.ROLLBACK_REFUSED: 409,
    Reason.JOB_ALREADY_RUNNING: 409,
}


@app.post(
    "/api/cids/{cid}/rollback",
    summary="Roll back one CID: remove exactly the notes its migrations inserted, and their copied files",
    description="`dry_run=true` (the default) reports what would be removed and writes nothing; `dry_run=false` "
    "deletes the notes of the CID's audit map (scoped to the company) and their objects in CDP storage, records "
    "the rollback (who, when, counts), marks the audit entries rolled back (they are kept) and lets the CID be "
    "migrated again. Refused, writing nothing, when any of those notes changed in CDP after migration (409 "
    "ROLLBACK_REFUSED, listed in `changed_in_cdp`), a run holds the CID (409 JOB_ALREADY_RUNNING) or nothing is "
    "left to roll back (404 NOTHING_TO_ROLL_BACK). Bearer token only.",
    responses={
        404: {"model": Refusal, "description": "NOTHING_TO_ROLL_BACK"},
        409: {"description": "ROLLBACK_REFUSED (with `changed_in_cdp`) or JOB_ALREADY_RUNNING"},
        401: UNAUTHENTICATED[401],
        403: UNAUTHENTICATED[403],
    },
    tags=["operate"],
)
def rollback_cid(
    cid: Annotated[int, Path(ge=1, description="CRM organization id (CID)")],
    user: Operator,
    dry_run: Annotated[bool, Query(description="default true: report only, write nothing")] = True,
) -> Any:
    from notes_migration.domain.config import CDP_S3_CONN_ID
    from notes_migration.ops import rollback
    from notes_migration.stores import s3_store as s3

    target = None if dry_run else s3.bucket_for(CDP_S3_CONN_ID)
    with _crm() as crm:
        try:
            report = rollback.rollback_cid(
                crm,
                _cdp(),
                cid,
                requested_by=user.get_name(),
                dry_run=dry_run,
                target=target,
                lease_seconds=settings.thresholds().lock_lease_seconds,
            )
        except Refused as refused:
            content: dict[str, Any] = {
                "detail": str(refused).split(": ", 1)[-1],
                "reason_code": refused.reason.value,
            }
            if isinstance(refused, rollback.RollbackRefused):
                content.update(jsonable_encoder(refused.report))
            return JSONResponse(status_code=ROLLBACK_REFUSAL_HTTP_STATUS.get(refused.reason, 409), content=content)
    return JSONResponse(jsonable_encoder(report))


# --------------------------------------------------------------------------- failed-record retry (OQ-3)

RETRY_REFUSAL_HTTP_STATUS: dict[Reason, int] = {
    Reason.JOB_NOT_FOUND: 404,
    Reason.JOB_ALREADY_RUNNING: 409,
    Reason.NOTHING_TO_RETRY: 409,
    Reason.RETRY_REFUSED: 422,
}


class RetryBody(BaseModel):
    """Which failed notes to retry: every reason of the queue when reason_codes is absent."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason_codes: list[str] | None = Field(
        None, min_length=1, max_length=10, description='e.g. ["CONTACT_NOT_MAPPED"] after a contact backfill'
    )


@app.post(
    "/api/jobs/{job_id}/retry",
    summary="Retry a job's failed-record queue (all of it, or by reason code) and recompute its verdict",
    description="Reads only the queued note ids from the CRM, resolves their persons afresh (e.g. after a contact "
    "backfill), inserts what now succeeds, moves recovered notes out of the queue (audited, counted migrated), "
    "relinks their files and re-runs validation. Holds the CID's lock while it runs, like a run; runs inside the "
    "request (queues are small: a run halts above 1% failures). Refused, writing nothing: unknown job (404 "
    "JOB_NOT_FOUND), job still running or the CID locked (409 JOB_ALREADY_RUNNING), no failed note of those "
    "reasons within the retention window (409 NOTHING_TO_RETRY), a dry-run, halted or superseded job, reason codes "
    "that are not note failures, or a queue too large (422 RETRY_REFUSED). Bearer token only.",
    responses={
        404: {"model": Refusal, "description": "JOB_NOT_FOUND"},
        409: {"model": Refusal, "description": "JOB_ALREADY_RUNNING or NOTHING_TO_RETRY"},
        422: {"model": Refusal, "description": "RETRY_REFUSED (or a malformed body)"},
        401: UNAUTHENTICATED[401],
        403: UNAUTHENTICATED[403],
    },
    tags=["operate"],
)
def retry_job(
    job_id: Annotated[str, Path(max_length=200)], request: Request, user: Operator, body: RetryBody | None = None
) -> Any:
    from notes_migration.ops import retry

    db = _cdp()
    reasons = body.reason_codes if body else None
    try:
        retry.check_retry(db, job_id, reasons)  # before any connection to the CRM or S3: a refusal is cheap
        with _crm() as crm:
            record = retry.run_retry(crm, db, job_id, reasons, requested_by=user.get_name())
    except Refused as refused:
        return _retry_refusal(refused)
    answer = retry.outcome(db, job_id, record)
    answer["status_url"] = f"{_mount_path(request)}/api/status?cid={answer['cid']}"
    return JSONResponse(jsonable_encoder(answer))


def _retry_refusal(refused: Refused) -> JSONResponse:
    message = str(refused).split(": ", 1)[-1]
    return JSONResponse(
        status_code=RETRY_REFUSAL_HTTP_STATUS.get(refused.reason, 409),
        content={"detail": message, "reason_code": refused.reason.value},
    )


# --------------------------------------------------------------------------- rollouts and the weekly aggregate


@app.get(
    "/api/rollouts",
    summary="Rollouts of many CIDs (crm_notes_rollout runs), newest first, with their totals",
    tags=["monitor"],
    responses=UNAUTHENTICATED,
)
def list_rollouts(user: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    from notes_migration.ops import rollout

    return {
        "rollouts": jsonable_encoder(
            rollout.list_rollouts(_cdp(), limit=limit, run_states=airflow_runs.rollout_run_states)
        )
    }


@app.get(
    "/api/rollouts/{rollout_id}",
    summary="One rollout: per CID its decision, progress, final state, match_pct, failure rate, attachment "
    "success and duration; the totals and the halt rate against the Stage-3 gate (live while it runs)",
    responses={404: {"model": Refusal, "description": "ROLLOUT_NOT_FOUND"}, **UNAUTHENTICATED},
    tags=["monitor"],
)
def get_rollout(rollout_id: Annotated[str, Path(max_length=64)], user: Reader) -> Any:
    from notes_migration.ops import rollout

    view = rollout.rollout_view(_cdp(), rollout_id, airflow_runs.rollout_run_states)
    if view is None:
        return JSONResponse(
            status_code=404,
            content={"detail": f"rollout {rollout_id} not found", "reason_code": Reason.ROLLOUT_NOT_FOUND},
        )
    return JSONResponse(jsonable_encoder(view))


@app.get(
    "/api/weekly",
    summary="The weekly aggregates (PRD §12): CIDs completed and halted, mean match_pct, attachment success, "
    "halt rate per week (crm_notes_weekly_report), newest first",
    tags=["monitor"],
    responses=UNAUTHENTICATED,
)
def list_weekly(user: Reader, limit: Annotated[int, Query(ge=1, le=520)] = 12) -> dict[str, Any]:
    from notes_migration.ops import rollout

    return {"weeks": jsonable_encoder(rollout.list_weekly(_cdp(), limit=limit))}
