"""The one exception handler of the Ops API: every refusal and every HTTP error answers with its `reason_code`.

Routes raise, never build an error response: a business refusal (`notes_migration.domain.codes.Refused` and its
subclasses, e.g. UnknownCid, RollbackRefused; a Halted such as LOCK_LOST), a plugin refusal (`PluginRefused`,
e.g. the DAG not in Airflow yet), or FastAPI's own errors (authentication, validation, an unknown path). One table
maps the reason code to the HTTP status; the body is always `{detail, reason_code, message, …}` (`detail` kept
for the clients written before `message`, and what the refusal carries, e.g. a rollback's report).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from notes_migration.domain.codes import Halted, Reason, Refused

# Codes of the HTTP layer itself (not refusals of the migration's logic).
UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
INVALID_REQUEST = "INVALID_REQUEST"
DAG_UNAVAILABLE = "DAG_UNAVAILABLE"

# reason code → HTTP status: the only place a refusal gets its status.
HTTP_STATUS: dict[str, int] = {
    Reason.FLAG_DISABLED: 403,
    Reason.CID_NOT_FOUND: 404,
    Reason.JOB_NOT_FOUND: 404,
    Reason.NOTHING_TO_ROLL_BACK: 404,
    Reason.ROLLOUT_NOT_FOUND: 404,
    Reason.ALREADY_MIGRATED: 409,
    Reason.JOB_ALREADY_RUNNING: 409,
    Reason.JOB_ALREADY_FINISHED: 409,
    Reason.ROLLBACK_REFUSED: 409,
    Reason.NOTHING_TO_RETRY: 409,
    Reason.INVALID_COMPANY_SSO_ID: 422,
    Reason.RETRY_REFUSED: 422,
    Reason.CDP_API_UNAUTHORIZED: 502,  # the CDP notes API refused our S2S token: an upstream problem
    Reason.SIGNOFF_REFUSED: 422,
    UNAUTHENTICATED: 401,
    FORBIDDEN: 403,
    NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    INVALID_REQUEST: 422,
    DAG_UNAVAILABLE: 503,
}
DEFAULT_REFUSAL_STATUS = 409  # a reason code not in the table (e.g. LOCK_LOST): the request conflicts with the state
HTTP_ERROR_CODES = {status: code for code, status in HTTP_STATUS.items() if not isinstance(code, Reason)}


class PluginRefused(Exception):
    """A refusal of the plugin itself, with a code of the table (e.g. DAG_UNAVAILABLE)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def documented(*codes: str) -> dict[int | str, dict[str, Any]]:
    """A route's OpenAPI `responses` for the reason codes it can answer, each under its status from the table."""
    from crm_notes_migration_ops.auth import Refusal

    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry = out.setdefault(HTTP_STATUS[code], {"model": Refusal, "description": ""})
        entry["description"] = " or ".join(filter(None, (entry["description"], str(code))))
    return out


def _body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"detail": message, "reason_code": code, "message": message, **extra}


async def answer_refusal(request: Request, exc: Exception) -> JSONResponse:
    """The exception handler (registered for every class of HANDLED)."""
    from notes_migration.ops.queries import refusal_body  # loaded on the first refusal, not with the plugin

    headers = None
    if isinstance(exc, Refused | Halted):
        body = refusal_body(exc)
        status = HTTP_STATUS.get(body["reason_code"], DEFAULT_REFUSAL_STATUS)
    elif isinstance(exc, PluginRefused):
        body, status = _body(exc.code, str(exc)), HTTP_STATUS[exc.code]
    elif isinstance(exc, RequestValidationError):
        errors = jsonable_encoder(exc.errors())
        message = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errors)
        body, status = {**_body(INVALID_REQUEST, message or "invalid request"), "detail": errors}, 422
    elif isinstance(exc, HTTPException):
        code = HTTP_ERROR_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        body, status, headers = _body(code, str(exc.detail)), exc.status_code, exc.headers
    else:  # pragma: no cover - only the classes of HANDLED are routed here
        raise exc
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers)


HANDLED: tuple[type[Exception], ...] = (Refused, Halted, PluginRefused, RequestValidationError, HTTPException)


def install(app: FastAPI) -> None:
    for cls in HANDLED:
        app.add_exception_handler(cls, answer_refusal)
