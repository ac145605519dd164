"""Constants and helpers shared by the plugin tests (conftest.py holds the fixtures)."""

from __future__ import annotations

from typing import Any

USERS = {"ops": ("ops-local-pass", "user"), "viewer": ("viewer-local-pass", "viewer")}
JWT_SECRET = "local-test-jwt-secret-not-a-real-secret-only-for-the-plugin-tests-0123456789"
PD_ROUTING_KEY = "local-test-routing-key"
PREFIX = "/crm-notes-migration"

# CIDs of this package on the shared servers: 3001–3099; 3999 is never seeded.
NOT_STARTED, IN_PROGRESS, HALTED, SUCCESS, WITH_ERRORS = 3001, 3002, 3003, 3004, 3005
UNKNOWN_CID = 3999


def dag_runs_of(cid: int | None = None) -> list[Any]:
    """The migration DAG's runs in this session's metadata DB (optionally of one CID)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == "crm_notes_migration")).all()
        session.expunge_all()
    return [r for r in runs if cid is None or (r.conf or {}).get("cid") == cid]


def task_state(dag_run: Any, task_id: str) -> str:
    """The state of one (unmapped) task instance of a finished run."""
    [ti] = [t for t in dag_run.get_task_instances() if t.task_id == task_id]
    return str(ti.state)


class StatsRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, dict]] = []

    def incr(self, stat: str, count: int = 1, rate: Any = None, *, tags: dict | None = None) -> None:
        self.calls.append(("incr", stat, count, tags or {}))

    def timing(self, stat: str, dt: Any, *, tags: dict | None = None) -> None:
        self.calls.append(("timing", stat, dt, tags or {}))

    def total(self, stat: str, cid: int | None = None) -> int:
        return sum(
            c[2] for c in self.calls if c[0] == "incr" and c[1] == stat and (cid is None or c[3].get("cid") == str(cid))
        )

    def timings(self, stat: str, cid: int | None = None) -> list[Any]:
        return [
            c[2]
            for c in self.calls
            if c[0] == "timing" and c[1] == stat and (cid is None or c[3].get("cid") == str(cid))
        ]


def set_run_state(run_id: str, state: str) -> None:
    """Set a DAG run's state in this session's metadata DB, as marking it in the UI does."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagRun).where(DagRun.run_id == run_id).values(state=state))


def add_dag_run(dag_id: str, run_id: str, state: str) -> None:
    """A run row in this session's metadata DB, as the scheduler records a triggered run (no task ran)."""
    import datetime as dt

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunType

    with create_session() as session:
        now = dt.datetime.now(dt.UTC)
        session.add(DagRun(dag_id=dag_id, run_id=run_id, run_type=DagRunType.MANUAL, state=state, run_after=now))
