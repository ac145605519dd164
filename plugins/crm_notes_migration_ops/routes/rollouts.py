"""Rollouts of many CIDs (crm_notes_rollout runs) and the weekly aggregates (PRD §12)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from crm_notes_migration_ops import airflow_runs
from crm_notes_migration_ops.auth import UNAUTHENTICATED, Reader, Refusal
from crm_notes_migration_ops.routes.common import cdp
from notes_migration.domain.codes import Reason, Refused

router = APIRouter(prefix="/api", tags=["monitor"])


@router.get(
    "/rollouts",
    summary="Rollouts of many CIDs (crm_notes_rollout runs), newest first, with their totals",
    responses=UNAUTHENTICATED,
)
def list_rollouts(user: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    from notes_migration.ops import rollout

    return {
        "rollouts": jsonable_encoder(
            rollout.list_rollouts(cdp(), limit=limit, run_states=airflow_runs.rollout_run_states)
        )
    }


@router.get(
    "/rollouts/{rollout_id}",
    summary="One rollout: per CID its decision, progress, final state, match_pct, failure rate, attachment "
    "success and duration; the totals and the halt rate against the Stage-3 gate (live while it runs)",
    responses={404: {"model": Refusal, "description": "ROLLOUT_NOT_FOUND"}, **UNAUTHENTICATED},
)
def get_rollout(rollout_id: Annotated[str, Path(max_length=64)], user: Reader) -> Any:
    from notes_migration.ops import rollout

    view = rollout.rollout_view(cdp(), rollout_id, airflow_runs.rollout_run_states)
    if view is None:
        raise Refused(Reason.ROLLOUT_NOT_FOUND, f"rollout {rollout_id} not found")
    return JSONResponse(jsonable_encoder(view))


@router.get(
    "/weekly",
    summary="The weekly aggregates (PRD §12): CIDs completed and halted, mean match_pct, attachment success, "
    "halt rate per week (crm_notes_weekly_report), newest first",
    responses=UNAUTHENTICATED,
)
def list_weekly(user: Reader, limit: Annotated[int, Query(ge=1, le=520)] = 12) -> dict[str, Any]:
    from notes_migration.ops import rollout

    return {"weeks": jsonable_encoder(rollout.list_weekly(cdp(), limit=limit))}
