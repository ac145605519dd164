"""The only place that turns Airflow connection ids into clients (credentials never leave hooks)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from bson.codec_options import CodecOptions

from notes_migration.domain.config import CDP_MONGO_CONN_ID, CRM_POSTGRES_CONN_ID, DEFAULT_CDP_DATABASE
from notes_migration.stores.crm_source import CrmSession


@contextmanager
def crm_connection(conn_id: str = CRM_POSTGRES_CONN_ID, *, read_only: bool = True) -> Iterator:
    """A read-only connection to the CRM: the migration never writes there. Only the
    synthetic-data seeder (and its tests) asks for `read_only=False`.

    The Postgres provider hands out a psycopg 3 connection here (psycopg2 only
    when psycopg 3 is absent); both accept these session settings."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn: Any = PostgresHook(postgres_conn_id=conn_id).get_conn()  # psycopg's, typed by the hook as a compat shim
    try:
        if read_only:
            conn.autocommit = True
            conn.read_only = True
        yield conn
    finally:
        conn.close()


def _open_crm(conn_id: str) -> Any:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn: Any = PostgresHook(postgres_conn_id=conn_id).get_conn()
    conn.autocommit = True
    conn.read_only = True
    return conn


@contextmanager
def crm_session(
    conn_id: str = CRM_POSTGRES_CONN_ID, *, retries: int = 3, backoff_seconds: float = 2.0
) -> Iterator[CrmSession]:
    """A read-only CRM session whose reads retry with backoff and reconnect (PRD §9 #2), opened lazily:
    a CRM that is down fails the first read, after its retries, with CRM_EXTRACT_FAILED."""
    session = CrmSession(lambda: _open_crm(conn_id), retries=retries, backoff_seconds=backoff_seconds)
    try:
        yield session
    finally:
        session.close()


@cache
def _mongo_client(conn_id: str):
    from airflow.providers.mongo.hooks.mongo import MongoHook

    hook = MongoHook(mongo_conn_id=conn_id)
    return hook.get_conn(), hook.connection.schema or DEFAULT_CDP_DATABASE


def cdp_database(conn_id: str = CDP_MONGO_CONN_ID):
    """The CDP database, reading dates as timezone-aware UTC."""
    client, name = _mongo_client(conn_id)
    return client.get_database(name, codec_options=CodecOptions(tz_aware=True, tzinfo=dt.UTC))
