"""What the routers share: the connections, the mount path as the client sees it, parameter types."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import Path, Query, Request

from crm_notes_migration_ops import URL_PREFIX
from notes_migration.domain import contract
from notes_migration.tasks.lazy import lazy_import

# Loaded when a route first uses it, not when Airflow loads the plugin (it brings pymongo, psycopg …).
ops = lazy_import("notes_migration.ops.queries")

CidQuery = Annotated[int, Query(ge=1, description="CRM organization id (CID)")]
CidPath = Annotated[int, Path(ge=1, description="CRM organization id (CID)")]
UuidQuery = Annotated[str, Query(pattern=contract.UUID_PATTERN, description="CDP company UUID")]
JobIdPath = Annotated[str, Path(max_length=200)]


@contextmanager
def crm() -> Iterator[Any]:
    from notes_migration.stores.connections import crm_connection

    with crm_connection() as conn:
        yield conn


def cdp() -> Any:
    from notes_migration.stores.connections import cdp_database

    return cdp_database()


def mount_path(request: Request) -> str:
    """This app's path prefix as the client sees it (includes Airflow's base URL path)."""
    return request.scope.get("root_path", "").rstrip("/") or URL_PREFIX


def airflow_path(request: Request) -> str:
    mount = mount_path(request)
    return mount[: -len(URL_PREFIX)] if mount.endswith(URL_PREFIX) else ""


def status_url(request: Request, cid: int) -> str:
    return f"{mount_path(request)}/api/status?cid={cid}"
