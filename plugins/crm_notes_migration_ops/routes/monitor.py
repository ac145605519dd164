"""Reads: the status of a CID (PRD §8 Monitor API), the fleet, a job's error log, the coverage report."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from crm_notes_migration_ops import airflow_runs
from crm_notes_migration_ops.auth import UNAUTHENTICATED, Reader, Refusal
from crm_notes_migration_ops.routes.common import CidQuery, JobIdPath, UuidQuery, cdp, crm, ops
from notes_migration.domain.codes import OUTCOME_FILTERS, State

router = APIRouter(prefix="/api", tags=["monitor"])

OutcomeFilter = StrEnum("OutcomeFilter", {name: name for name in OUTCOME_FILTERS})  # type: ignore[misc]


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


CID_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Refusal, "description": "CID_NOT_FOUND: the CID is unknown to the CRM"}
}


@router.get(
    "/status",
    summary="Status of a CID's migration (PRD §8 Monitor API)",
    responses={200: {"model": StatusResponse}, **CID_NOT_FOUND, **UNAUTHENTICATED},
)
def get_status(
    cid: CidQuery,
    user: Reader,
    dry_run: Annotated[
        bool, Query(description="true: the CID's latest dry-run report instead (its real status is unchanged)")
    ] = False,
) -> Any:
    runs = None if dry_run else airflow_runs.runs_by_cid(cid).get(cid)
    with crm() as conn:
        return JSONResponse(jsonable_encoder(ops.status_answer(conn, cdp(), cid, runs, dry_run=dry_run)))


@router.get("/jobs", summary="Fleet: the latest job of every CID that has one", responses=UNAUTHENTICATED)
def list_jobs(user: Reader) -> dict[str, Any]:
    rows = ops.fleet(cdp(), airflow_runs.runs_by_cid())
    return {"jobs": rows, "counts": ops.state_counts(rows)}


@router.get(
    "/jobs/{job_id}/errors",
    summary="A job's reason-coded error log (CSV by default, JSON on request)",
    description="Rows: `legacy_crm_note_id`, `reason_code`, `details`, `outcome`, `created_at`, a short `reason`; "
    "a COVERAGE_BELOW_GATE halt lists every unmapped person (`crm_person_id`, `notes_affected`); attachment rows "
    "carry `attachment_id`, `file_name` and `source_key`. "
    "`outcome=errors` (default) lists run errors, note failures and attachment failures; `all` adds the skips. "
    "JSON with `format=json` or `Accept: application/json`.",
    responses={
        200: {"content": {"text/csv": {}, "application/json": {}}},
        404: {"model": Refusal, "description": "JOB_NOT_FOUND"},
        **UNAUTHENTICATED,
    },
)
def get_errors(
    request: Request,
    job_id: JobIdPath,
    user: Reader,
    format: Annotated[Literal["csv", "json"] | None, Query(description="default csv")] = None,
    outcome: OutcomeFilter = OutcomeFilter.errors,  # type: ignore[attr-defined]
    limit: Annotated[int, Query(ge=0, le=1_000_000, description="0: no limit")] = 0,
) -> Response:
    outcome_name = OutcomeFilter(outcome).value
    with crm() as conn:  # a coverage halt lists its unmapped persons from the CRM's notes per person
        log = ops.error_log_answer(cdp(), job_id, outcome_name, limit, crm=conn)
    wants_json = format == "json" or (format is None and "application/json" in request.headers.get("accept", ""))
    if wants_json:
        return JSONResponse(log)
    filename = f"crm-notes-migration-{job_id}-{outcome_name}.csv"
    return Response(
        ops.error_log_csv(log["entries"]),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/coverage",
    summary="Person→Contact coverage report of a CID (OQ-2), on demand, before any run",
    responses={**CID_NOT_FOUND, **UNAUTHENTICATED},
)
def get_coverage(cid: CidQuery, company_sso_id: UuidQuery, user: Reader, include_activities: bool = False) -> Any:
    with crm() as conn:
        return ops.coverage_answer(conn, cdp(), cid, company_sso_id, include_activities=include_activities)
