"""Task bodies of `crm_notes_rollout` and `crm_notes_weekly_report`: the Airflow edge around rollout.py.

A lane launches one `crm_notes_migration` run at a time and waits for it, through the Task SDK's
supervisor channel: the same `TriggerDagRun` / `GetDagRunState` messages the standard provider's
TriggerDagRunOperator has its task runner send (tasks never touch the metadata DB in Airflow 3). A lane
is one mapped task instance; `max_concurrent` lanes give the rollout's concurrency cap at run time.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

from notes_migration.domain.config import DAG_ID, job_id_for
from notes_migration.domain.contract import ROLLOUT_PARAMS, run_options
from notes_migration.domain.plain import utc_now
from notes_migration.ops import rollout
from notes_migration.stores import job_store, settings
from notes_migration.stores.connections import cdp_database

log = logging.getLogger(__name__)

DONE_RUN_STATES = ("success", "failed")


def _params() -> dict[str, Any]:
    return run_options(dict(get_current_context()["params"]), ROLLOUT_PARAMS)


def _entries(params: dict[str, Any]) -> list[dict[str, Any]]:
    raw: Any = params["cids"]
    if not raw and params["cids_variable"]:
        from airflow.sdk import Variable

        raw = Variable.get(params["cids_variable"], default=None, deserialize_json=True)
        if raw is None:
            raise AirflowFailException(f"Variable {params['cids_variable']!r} does not exist")
    try:
        return rollout.parse_entries(raw)
    except ValueError as exc:
        raise AirflowFailException(f"invalid rollout list: {exc}") from None


def plan() -> list[dict[str, Any]]:
    """Check the list, decide each CID (skip completed, report flag-off, launch the rest), store the plan."""
    ctx = get_current_context()
    params = _params()
    entries = _entries(params)
    db = cdp_database()
    latest = {e["cid"]: (job_store.latest_job(db, e["cid"]) or {}).get("state") for e in entries}
    decided = rollout.classify(entries, latest, settings.flag_cids())
    run_id = ctx["dag_run"].run_id
    rid = rollout.rollout_id_for(run_id)
    existing = rollout.get_rollout(db, rid)
    doc = {
        "_id": rid,
        "dag_run_id": run_id,
        "params": {k: v for k, v in params.items() if k != "cids"},
        "cids": decided,
        "state": rollout.RolloutState.RUNNING.value,
        "created_at": (existing or {}).get("created_at") or utc_now(),
    }
    rollout.save_plan(db, doc)
    to_launch = sum(1 for e in decided if e["decision"] == rollout.Decision.LAUNCH)
    lanes = min(params["max_concurrent"], to_launch)
    slots = _executor_slots()
    if lanes and slots is not None and lanes >= slots:
        # a lane holds its executor slot while it waits: with every slot held, no migration task could ever run
        raise AirflowFailException(
            f"max_concurrent {params['max_concurrent']} needs {lanes} lanes, each holding an executor slot while it "
            f"waits, and [core] parallelism is {slots}: no slot would be left for the migration runs. Lower "
            f"max_concurrent below {slots} (or raise AIRFLOW__CORE__PARALLELISM)"
        )
    log.info("rollout %s: %d CIDs, %d to launch on %d lanes: %s", rid, len(decided), to_launch, lanes, decided)
    return [{"rollout_id": rid, "lane": n} for n in range(lanes)]


def _executor_slots() -> int | None:
    """`[core] parallelism`: the most task instances running at once across the deployment (None: unknown)."""
    try:
        from airflow.configuration import conf

        slots = conf.getint("core", "parallelism")
    except Exception:  # a worker without the core config: no check rather than a wrong one
        return None
    return slots if slots > 0 else None


def _trigger(run_id: str, conf: dict[str, Any]) -> None:
    """Create the migration run (idempotent: a run that already exists is the one a retried lane launched)."""
    from airflow.sdk.exceptions import ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse, TriggerDagRun
    from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

    msg = SUPERVISOR_COMMS.send(
        TriggerDagRun(dag_id=DAG_ID, run_id=run_id, conf=conf, logical_date=None, run_after=utc_now())
    )
    if isinstance(msg, ErrorResponse):
        if msg.error == ErrorType.DAGRUN_ALREADY_EXISTS:
            log.info("run %s already exists: waiting for it", run_id)
            return
        raise RuntimeError(f"could not trigger {DAG_ID} run {run_id}: {msg.error} {msg.detail}")


def _run_state(run_id: str) -> str:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    state = RuntimeTaskInstance.get_dagrun_state(dag_id=DAG_ID, run_id=run_id)
    # the SDK answers with its own DagRunState (str, Enum): str() of it is "DagRunState.SUCCESS", its value "success"
    return str(getattr(state, "value", state))


def _wait_and_record(db: Any, rid: str, doc: dict[str, Any], poke_interval: int) -> str:
    run_id, cid = doc["run_id"], doc["cid"]
    while (state := _run_state(run_id)) not in DONE_RUN_STATES:
        time.sleep(poke_interval)
    finished = utc_now()
    row = rollout.job_rows(db, [doc["job_id"]]).get(doc["job_id"])
    outcome = rollout.final_state(state, row)
    launched = doc.get("launched_at")
    if isinstance(launched, dt.datetime) and launched.tzinfo is None:
        launched = launched.replace(tzinfo=dt.UTC)
    duration = round((finished - launched).total_seconds(), 1) if isinstance(launched, dt.datetime) else None
    rollout.update_cid(
        db, rid, cid, finished=True, finished_at=finished, run_state=state, duration_s=duration, **outcome
    )
    log.info("CID %s: run %s ended %s, job %s (%s s)", cid, run_id, state, outcome, duration)
    return str(outcome["state"])


def run_lane(descriptor: dict[str, Any]) -> dict[str, Any]:
    """Launch CIDs one after the other, in list order, until none is left or the gate trips."""
    get_current_context()["lane_label"] = f"lane {descriptor['lane']}"  # type: ignore[typeddict-unknown-key]
    params = _params()
    db = cdp_database()
    rid, lane = descriptor["rollout_id"], int(descriptor["lane"])
    stored = rollout.get_rollout(db, rid)
    if stored is None:
        raise LookupError(f"rollout {rid} not found")
    done: list[dict[str, Any]] = []
    for doc in rollout.cid_docs(db, rid).values():  # a retried lane first finishes what it had launched
        if doc.get("lane") == lane and not doc.get("finished"):
            _trigger(doc["run_id"], doc["conf"])
            done.append({"cid": doc["cid"], "state": _wait_and_record(db, rid, doc, params["poke_interval"])})
    while True:
        nxt = rollout.next_to_launch(stored["cids"], rollout.cid_docs(db, rid))
        if nxt is None:
            break
        states = rollout.finished_job_states(db, rid)
        if not rollout.gate_open(states, params["halt_gate"]):
            log.warning(
                "halt gate tripped (halt rate %.4f > %.4f over %d finished CIDs): lane %d launches nothing more",
                rollout.halt_rate(states),
                params["halt_gate"],
                len(states),
                lane,
            )
            break
        cid = nxt["cid"]
        run_id = rollout.migration_run_id(rid, cid)
        conf = {"cid": cid, "company_sso_id": nxt["company_sso_id"], "batch_size": params["batch_size"]}
        doc = {"lane": lane, "run_id": run_id, "job_id": job_id_for(run_id, cid), "conf": conf, "finished": False}
        if not rollout.claim(db, rid, cid, **doc, launched_at=utc_now()):
            continue  # another lane took it first
        _trigger(run_id, conf)
        doc.update(cid=cid, launched_at=utc_now())
        rollout.update_cid(db, rid, cid, launched_at=doc["launched_at"])
        log.info("lane %d launched CID %s as run %s", lane, cid, run_id)
        done.append({"cid": cid, "state": _wait_and_record(db, rid, doc, params["poke_interval"])})
    return {"lane": lane, "cids": done}


def report() -> dict[str, Any]:
    """The rollout's report, stored on its document; fails the task (after storing) when the gate stopped it."""
    db = cdp_database()
    rid = rollout.rollout_id_for(get_current_context()["dag_run"].run_id)
    stored = rollout.get_rollout(db, rid)
    if stored is None:
        raise AirflowFailException(f"rollout {rid} has no plan (the plan task failed): nothing to report")
    out = rollout.report_of(db, stored, final=True)
    finished = utc_now()
    rollout.save_plan(db, {**stored, "state": out["state"], "report": out, "finished_at": finished})
    totals = out["totals"]
    log.info("rollout %s %s: %s", rid, out["state"], totals)
    if out["state"] == rollout.RolloutState.STOPPED_AT_GATE:
        raise AirflowFailException(
            f"rollout {rid} stopped at the Stage-3 gate: halt rate {totals['halt_rate']:.2%} > {totals['halt_gate']:.2%}"
            f"; {totals['not_launched_halt_gate']} CIDs not launched"
        )
    return {"rollout_id": rid, "state": out["state"], "totals": totals}


def weekly() -> dict[str, Any]:
    """The PRD §12 weekly aggregate of the 7 days before the run's data interval end."""
    ctx = get_current_context()
    scheduled = str(ctx["dag_run"].run_type) == "scheduled"  # a manual run: the 7 days before now
    end = (ctx.get("data_interval_end") if scheduled else None) or utc_now()
    doc = rollout.save_weekly(cdp_database(), end)
    log.info("weekly aggregate %s: %s", doc["_id"], {k: v for k, v in doc.items() if k != "cids"})
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in doc.items()}
