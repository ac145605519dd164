"""The Ops page (the nav view "CRM Notes Migration"): rendered on the server, refreshing itself, strict CSP."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials

from crm_notes_migration_ops import airflow_runs
from crm_notes_migration_ops.auth import UNAUTHENTICATED, Reader, bearer_scheme, cookie_scheme, reader
from crm_notes_migration_ops.routes.common import airflow_path, cdp, crm, mount_path, ops
from notes_migration.domain.codes import State
from notes_migration.domain.config import DAG_ID

UI_REFRESH_SECONDS = 15

router = APIRouter(tags=["ui"])


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
    env.filters["utc_time"] = _utc_time
    env.filters["reason_words"] = lambda code: _explain().reason_words(str(code) if code else None)
    env.filters["state_words"] = lambda state: _explain().state_words(str(state) if state else None)
    return env


def _explain() -> Any:
    from notes_migration.domain import explain

    return explain


def _utc_time(value: Any) -> Any:
    """A time as `<time datetime=ISO class="utc">YYYY-MM-DD HH:MM:SS.mmm UTC</time>`; the page's script adds the
    reader's local offset beside it."""
    from markupsafe import Markup, escape

    if not value:
        return "—"
    text = str(value)
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    utc = parsed.astimezone(dt.UTC)
    shown = utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d} UTC"
    return Markup('<time class="utc" datetime="{}">{}</time>').format(escape(utc.isoformat()), shown)


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


@router.get("/", include_in_schema=False)
async def root(request: Request, user: Reader) -> RedirectResponse:
    return RedirectResponse(f"{mount_path(request)}/ui", status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get(
    "/ui",
    response_class=HTMLResponse,
    summary="The Ops page (nav view of the Airflow UI)",
    responses=UNAUTHENTICATED,
)
async def ui(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie_token: Annotated[str | None, Depends(cookie_scheme)],
    cid: Annotated[str | None, Query(max_length=12, description="show one CID's detail")] = None,
) -> HTMLResponse:
    def build() -> dict[str, Any]:
        return {
            "refresh_seconds": UI_REFRESH_SECONDS,
            "dag_id": DAG_ID,
            "run_path": airflow_runs.run_path,
            **_ui_context(cid),
        }

    return await html_or_denied(request, credentials, cookie_token, "ui.html", build)


async def html_or_denied(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    cookie_token: str | None,
    template: str,
    build: Any,
) -> HTMLResponse:
    """Render `template` with build()'s context for a reader; the 401/403 page (with the login link) otherwise."""
    from starlette.concurrency import run_in_threadpool

    request.state.nonce = secrets.token_urlsafe(16)
    env = _templates()
    try:
        await reader(credentials, cookie_token)
    except HTTPException as exc:
        body = env.get_template("denied.html").render(
            status_code=exc.status_code, detail=exc.detail, login_url=_login_url(request), nonce=request.state.nonce
        )
        return _page(request, body, exc.status_code, exc.headers)
    try:
        context = await run_in_threadpool(build)
        error = None
    except Exception as exc:  # a refusal (unknown CID, no job): shown in the page, with its reason code
        from notes_migration.domain.codes import Halted, Refused
        from notes_migration.ops.queries import refusal_body

        if not isinstance(exc, Refused | Halted):
            raise
        context, error = {}, refusal_body(exc)
    body = env.get_template(template).render(nonce=request.state.nonce, error=error, **context)
    return _page(request, body)


def _login_url(request: Request) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    try:
        return get_auth_manager().get_url_login()
    except Exception:  # an auth manager without a login page: Airflow's root shows its own
        return f"{airflow_path(request)}/"


def _rollout_context(db: Any) -> dict[str, Any]:
    """The Ops page's rollouts (the newest one in full, with its per-CID progress) and weekly aggregates."""
    from notes_migration.ops import rollout

    rollouts = rollout.list_rollouts(db, limit=10, run_states=airflow_runs.rollout_run_states)
    latest = rollout.rollout_view(db, rollouts[0]["rollout_id"], airflow_runs.rollout_run_states) if rollouts else None
    return {"rollouts": rollouts, "rollout": latest, "weeks": rollout.list_weekly(db, limit=8)}


def _ui_context(cid_param: str | None) -> dict[str, Any]:
    db = cdp()
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
        with crm() as conn:
            try:
                cid = int(cid_param)
                context["detail"] = jsonable_encoder(ops.cid_detail(conn, db, cid, runs.get(cid)))
                from notes_migration.ops import dry_run

                context["dry_run"] = jsonable_encoder(dry_run.latest_report(db, cid))
            except ops.UnknownCid as unknown:
                context["lookup_error"] = f"{ops.refusal_message(unknown)}."
    return context
