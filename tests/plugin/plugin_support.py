"""Constants and helpers shared by the plugin tests (conftest.py holds the fixtures)."""

from __future__ import annotations

from typing import Any

from tests.cids import cids
from tests.fleet import HALTED, IN_PROGRESS, NOT_STARTED, SUCCESS, WITH_ERRORS  # noqa: F401 (the fleet's CIDs)
from tests.helpers import set_run_state  # noqa: F401 (re-exported for the plugin tests)

USERS = {"ops": ("ops-local-pass", "user"), "viewer": ("viewer-local-pass", "viewer")}
JWT_SECRET = "local-test-jwt-secret-not-a-real-secret-only-for-the-plugin-tests-0123456789"
PREFIX = "/crm-notes-migration"

# the fleet's CIDs, one per PRD §8 state (tests/fleet.py, the `fleet` fixture); UNKNOWN_CID is never seeded
UNKNOWN_CID = cids(__name__)[0]


def dag_runs_of(cid: int | None = None) -> list[Any]:
    """The migration DAG's runs in this session's metadata DB (optionally of one CID)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == "crm_notes_migration")).all()
        session.expunge_all()
    return [r for r in runs if cid is None or (r.conf or {}).get("cid") == cid]


def add_dag_run(dag_id: str, run_id: str, state: str) -> None:
    """A run row in this session's metadata DB, as the scheduler records a triggered run (no task ran)."""
    import datetime as dt

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunType

    with create_session() as session:
        now = dt.datetime.now(dt.UTC)
        session.add(DagRun(dag_id=dag_id, run_id=run_id, run_type=DagRunType.MANUAL, state=state, run_after=now))
