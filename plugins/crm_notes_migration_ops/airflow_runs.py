"""The Airflow metadata side of the Ops surface: runs of the migration DAG, and creating one.

Runs are created through Airflow's own trigger machinery (the same function the
`airflow dags trigger` command uses), so they are ordinary manual runs: they
show in the UI with the triggering user, and the DAG's first task checks them
like any other run. Only the API server calls this module (it needs the
metadata database, which task processes must not touch).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from notes_migration.domain.config import DAG_ID


class DagUnavailable(RuntimeError):
    """The DAG is not in the metadata DB yet (not parsed) or cannot be triggered."""


def _conf_cid(conf: Any) -> int | None:
    try:
        return int(conf["cid"]) if isinstance(conf, dict) and conf.get("cid") is not None else None
    except (TypeError, ValueError):
        return None


def active_run_ids(cid: int) -> list[str]:
    """Runs of the DAG for this CID that are queued or running (whether or not they hold the lock yet)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(DagRun.run_id, DagRun.conf).where(
                DagRun.dag_id == DAG_ID, DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING])
            )
        ).all()
    return sorted(run_id for run_id, conf in rows if _conf_cid(conf) == cid)


def active_run_of_job(job_id: str) -> dict[str, Any] | None:
    """The queued or running DAG run whose job id (config.job_id_for) is `job_id`: what a cancel finds when the
    run has not recorded its job yet. None when there is none."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    from notes_migration.domain.config import job_id_for

    with create_session() as session:
        rows = session.execute(
            select(DagRun.run_id, DagRun.conf).where(
                DagRun.dag_id == DAG_ID, DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING])
            )
        ).all()
    for run_id, conf in rows:
        cid = _conf_cid(conf)
        if cid is not None and job_id_for(run_id, cid) == job_id:
            return {"run_id": run_id, "conf": dict(conf)}
    return None


def runs_by_cid(cid: int | None = None, per_cid: int = 5) -> dict[int, list[dict[str, Any]]]:
    """{cid: its newest DAG runs, newest first}: run id, state, dates and the tasks that failed.

    What the status needs so that a run Airflow saw die (killed task process, unreachable
    execution API, marked failed by hand) is never reported as not_started or in_progress."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    out: dict[int, list[dict[str, Any]]] = {}
    with create_session() as session:
        rows = session.execute(
            select(DagRun.run_id, DagRun.conf, DagRun.state, DagRun.start_date, DagRun.end_date, DagRun.run_after)
            .where(DagRun.dag_id == DAG_ID)
            .order_by(DagRun.run_after.desc(), DagRun.id.desc())
        ).all()
        for run_id, conf, state, start, end, run_after in rows:
            run_cid = _conf_cid(conf)
            if run_cid is None or (cid is not None and run_cid != cid) or len(out.get(run_cid, [])) >= per_cid:
                continue
            dry = bool(isinstance(conf, dict) and conf.get("dry_run"))
            out.setdefault(run_cid, []).append(
                {"run_id": run_id, "state": str(state), "start_date": start, "end_date": end, "run_after": run_after}
                | {"dry_run": dry}
            )
        # a finished run's failed tasks, success included: a run whose teardown succeeded after its pages were
        # failed by hand can end "success" with a job that never finished (the status then says RUN_FAILED)
        wanted = [r["run_id"] for runs in out.values() for r in runs if r["state"] in ("failed", "success")]
        failed: dict[str, list[str]] = {}
        if wanted:
            for run_id, task_id, map_index in session.execute(
                select(TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index).where(
                    TaskInstance.dag_id == DAG_ID,
                    TaskInstance.run_id.in_(wanted),
                    TaskInstance.state == TaskInstanceState.FAILED,
                )
            ).all():
                failed.setdefault(run_id, []).append(task_id if map_index < 0 else f"{task_id}[{map_index}]")
        retrying = _retrying_tasks(
            session, [r["run_id"] for runs in out.values() for r in runs if r["state"] == "running"]
        )
    for runs in out.values():
        for run in runs:
            run["failed_tasks"] = sorted(failed.get(run["run_id"], []))
            if run["run_id"] in retrying:
                run["retrying_tasks"] = retrying[run["run_id"]]
    if cid is not None:
        out.setdefault(cid, [])  # asked and answered: Airflow has no run of this CID (deleted, never triggered)
    return out


def _retrying_tasks(session: Any, run_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """{run_id: its tasks waiting to be tried again (up_for_retry)}: which, which try failed and since when.
    What a poller is told while a killed or failed task waits for its retry."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    out: dict[str, list[dict[str, Any]]] = {}
    if not run_ids:
        return out
    rows = session.execute(
        select(
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.map_index,
            TaskInstance.try_number,
            TaskInstance.end_date,
        ).where(
            TaskInstance.dag_id == DAG_ID,
            TaskInstance.run_id.in_(run_ids),
            TaskInstance.state == TaskInstanceState.UP_FOR_RETRY,
        )
    ).all()
    for run_id, task_id, map_index, try_number, end in rows:
        out.setdefault(run_id, []).append(
            {
                "task": task_id if map_index < 0 else f"{task_id}[{map_index}]",
                "failed_try": try_number,
                "since": end,
            }
        )
    return out


def rollout_run_states(run_ids: list[str]) -> dict[str, str]:
    """{run_id: state} of crm_notes_rollout runs; a run the metadata DB does not have is RUN_NOT_FOUND
    (a rollout recorded by another Airflow, or a run deleted): the rollout view then stops calling it running."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from notes_migration.domain.contract import ROLLOUT_DAG_ID
    from notes_migration.ops.rollout import RUN_NOT_FOUND

    with create_session() as session:
        rows = session.execute(
            select(DagRun.run_id, DagRun.state).where(DagRun.dag_id == ROLLOUT_DAG_ID, DagRun.run_id.in_(run_ids))
        ).all()
    found = {run_id: str(getattr(state, "value", state)) for run_id, state in rows}
    return {run_id: found.get(run_id, RUN_NOT_FOUND) for run_id in run_ids}


def dag_is_paused() -> bool | None:
    """Whether the DAG is paused (a triggered run then waits); None when the DAG is unknown."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        dm = DagModel.get_current(DAG_ID, session=session)
        return None if dm is None else bool(dm.is_paused)


def trigger(conf: dict[str, Any], *, user_name: str | None) -> dict[str, Any]:
    """Create a queued manual run of the DAG with `conf`; returns its run_id and dates."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound
    from airflow.utils.types import DagRunTriggeredByType

    try:
        dag_run = trigger_dag(
            DAG_ID, triggered_by=DagRunTriggeredByType.REST_API, triggering_user_name=user_name, conf=conf
        )
    except DagNotFound as exc:
        raise DagUnavailable(f"DAG {DAG_ID} is not in the metadata database yet: {exc}") from None
    if dag_run is None:
        raise DagUnavailable(f"Airflow did not create a run of {DAG_ID}")
    return {
        "run_id": dag_run.run_id,
        "state": str(dag_run.state),
        "run_after": dag_run.run_after.isoformat() if dag_run.run_after else None,
    }


def mark_failed(run_id: str, attempts: int = 4) -> dict[str, Any] | None:
    """_mark_failed, tried again when PostgreSQL picks it as the victim of a deadlock with the scheduler (seen
    when a cancel follows the trigger at once: both update the new dag_run row); the scheduler's work wins."""
    import time

    from sqlalchemy.exc import OperationalError

    for attempt in range(1, attempts + 1):
        try:
            return _mark_failed(run_id)
        except OperationalError as exc:
            if "deadlock" not in str(exc).lower() or attempt == attempts:
                raise
            time.sleep(0.2 * attempt)
    return None  # unreachable: the last attempt returns or raises


def _mark_failed(run_id: str) -> dict[str, Any] | None:
    """Stop a run of the DAG as Airflow's own `PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}` with
    `{"state": "failed"}` does (same service function): running task instances are failed and their
    processes told to stop, pending ones skipped, listeners fired; the run itself is then closed as failed
    even though its release_lock teardown is pending (the cancel releases the lock). A run that already
    ended is left as it is. None when Airflow has no such run."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import DagRunMutableStates
    from airflow.api_fastapi.core_api.services.public.dag_run import patch_dag_run_state
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        dag_run = session.scalar(select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.run_id == run_id))
        if dag_run is None:
            return None
        before = str(getattr(dag_run.state, "value", dag_run.state))
        if before in ("success", "failed"):
            return {"run_id": run_id, "state_before": before, "state": before, "changed": False}
        dag = DBDagBag().get_dag_for_run(dag_run, session=session)
        if dag is None:
            raise DagUnavailable(f"DAG {DAG_ID} of run {run_id} is not in the metadata database")
        patch_dag_run_state(dag=dag, dag_run=dag_run, state=DagRunMutableStates.FAILED, session=session)
        session.flush()
        session.refresh(dag_run)
        if dag_run.state != DagRunState.FAILED:
            # Airflow leaves the run open while a teardown is pending (release_lock), so that it still runs;
            # the cancel releases the lock itself, so the run is closed as failed now.
            dag_run.set_state(DagRunState.FAILED)
    with create_session() as session:  # read back what was committed
        state = session.scalar(select(DagRun.state).where(DagRun.dag_id == DAG_ID, DagRun.run_id == run_id))
        after = str(getattr(state, "value", state))
    return {"run_id": run_id, "state_before": before, "state": after, "changed": True}


def run_path(run_id: str) -> str:
    """The run's page in the Airflow UI, relative to the UI's base URL."""
    return f"dags/{DAG_ID}/runs/{quote(run_id, safe='')}"
