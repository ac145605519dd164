"""The app's OpenAPI document and Swagger UI, behind the same authentication as the rest."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from crm_notes_migration_ops.auth import Reader
from crm_notes_migration_ops.routes.common import mount_path

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
def openapi(request: Request, user: Reader) -> JSONResponse:
    """The app's OpenAPI document; `servers` carries the mount path so "try it out" calls the right URLs."""
    return JSONResponse({**request.app.openapi(), "servers": [{"url": mount_path(request)}]})


@router.get("/docs")
def docs(request: Request, user: Reader) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=f"{mount_path(request)}/openapi.json", title=f"{request.app.title} — docs")
