"""The sign-off view (PRD §14 QA, the pilot's CSM sign-off, story S05): a CID's sample of notes as the CRM held them
and as the CDP front end will show them, a contact's timeline, and the sign-off record.

Nothing on these pages lets note HTML execute: the CRM original is shown as source text (autoescaped); the stored
CDP note travels as JSON, is sanitised in the browser by the CDP front end's own DOMPurify (served from static/)
and written into a sandboxed frame without `allow-scripts`, under a CSP that allows no script but the page's nonced
ones and no request but to this origin."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from crm_notes_migration_ops.auth import UNAUTHENTICATED, Operator, Reader, bearer_scheme, cookie_scheme
from crm_notes_migration_ops.errors import FORBIDDEN, documented
from crm_notes_migration_ops.errors import UNAUTHENTICATED as UNAUTHENTICATED_CODE
from crm_notes_migration_ops.routes.common import CidPath, CidQuery, cdp, crm
from crm_notes_migration_ops.routes.ui import html_or_denied
from notes_migration.domain.codes import Reason

router = APIRouter(tags=["sign-off"])

SeedQuery = Annotated[int | None, Query(ge=1, le=2**31 - 1, description="the sample's seed (default: a new one)")]
DrawQuery = Annotated[int, Query(ge=0, le=500, description="notes drawn at random beside the chosen ones")]


class SignoffBody(BaseModel):
    seed: int = Field(ge=1, le=2**31 - 1, description="the seed of the sample that was looked at")
    verdict: str = Field(max_length=4000, description="free text: what was checked, and the decision")
    job_id: str | None = Field(None, max_length=200, description="the job the page showed (refused if not latest)")
    sample_size: int = Field(0, ge=0, le=10_000)


def _sample(cid: int, seed: int | None, draw: int) -> dict[str, Any]:
    from notes_migration.ops import signoff

    with crm() as conn:
        return jsonable_encoder(signoff.sample(conn, cdp(), cid, seed=seed, random_draw=draw))


@router.get("/ui/signoff", response_class=HTMLResponse, summary="The sign-off view of a CID", responses=UNAUTHENTICATED)
async def signoff_page(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie_token: Annotated[str | None, Depends(cookie_scheme)],
    cid: CidQuery,
    seed: SeedQuery = None,
    random_draw: DrawQuery = 5,
) -> HTMLResponse:
    return await html_or_denied(
        request, credentials, cookie_token, "signoff.html", lambda: {"view": _sample(cid, seed, random_draw)}
    )


@router.get(
    "/ui/signoff/timeline",
    response_class=HTMLResponse,
    summary="A contact's notes, newest first, as an agent sees them",
    responses=UNAUTHENTICATED,
)
async def timeline_page(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie_token: Annotated[str | None, Depends(cookie_scheme)],
    cid: CidQuery,
    contact_id: Annotated[str, Query(min_length=1, max_length=64)],
) -> HTMLResponse:
    def build() -> dict[str, Any]:
        from notes_migration.ops import signoff

        return {"timeline": jsonable_encoder(signoff.timeline(cdp(), cid, contact_id))}

    return await html_or_denied(request, credentials, cookie_token, "timeline.html", build)


@router.get("/api/signoff", summary="The sign-off sample of a CID (JSON)", responses=UNAUTHENTICATED)
def get_signoff(cid: CidQuery, user: Reader, seed: SeedQuery = None, random_draw: DrawQuery = 5) -> Any:
    return JSONResponse(_sample(cid, seed, random_draw))


@router.post(
    "/api/cids/{cid}/signoff",
    summary="Record a sign-off of the CID's latest finished job: who, when, the sample's seed, a verdict",
    responses=documented(UNAUTHENTICATED_CODE, FORBIDDEN, Reason.CID_NOT_FOUND, Reason.SIGNOFF_REFUSED),
    status_code=status.HTTP_201_CREATED,
)
def post_signoff(cid: CidPath, body: SignoffBody, user: Operator) -> Any:
    """Stored with the job (the status JSON shows the latest as `signoff`). Refused with SIGNOFF_REFUSED (422,
    nothing written) without a finished job, when `job_id` is not the CID's latest job, or without a verdict.
    Bearer token only."""
    from notes_migration.ops import queries, signoff

    with crm() as conn:
        queries.require_cid(conn, cid)
    answer = signoff.record(
        cdp(),
        cid,
        by=user.get_name(),
        seed=body.seed,
        verdict=body.verdict,
        job_id=body.job_id,
        sample_size=body.sample_size,
    )
    return JSONResponse(jsonable_encoder(answer), status_code=status.HTTP_201_CREATED)


@router.get("/static/purify.min.js", include_in_schema=False)
def dompurify() -> FileResponse:
    """The CDP front end's sanitiser, DOMPurify (the version pinned in tools/dompurify), for the sign-off view."""
    path = resources.files("crm_notes_migration_ops") / "static" / "purify.min.js"
    return FileResponse(
        str(path),
        media_type="text/javascript; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=3600"},
    )
