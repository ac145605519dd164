"""Task bodies of `crm_notes_rollout` and `crm_notes_weekly_report`: the Airflow edge around rollout.py.

A lane (`rollout_lane.RolloutLaneOperator`, one mapped task instance per lane) asks `lane_step` what to
do next: launch a CID's `crm_notes_migration` run, re-attach to the one it had launched, wait deferred
for an approval or a window, or finish. Approvals (`approval.CidApprovalOperator`, one mapped HITL request
per CID in stage pilot/batch) record each answer with `record_approval`. No body touches Task SDK internals:
runs are triggered and awaited the way the standard provider's TriggerDagRunOperator does it (deferred).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

from notes_migration.domain.codes import ApprovalState, Stage
from notes_migration.domain.config import job_id_for
from notes_migration.domain.contract import ROLLOUT_PARAMS, defaults, run_options
from notes_migration.domain.plain import utc_now
from notes_migration.ops import approvals, rollout
from notes_migration.stores import job_store, settings
from notes_migration.stores.connections import cdp_database

log = logging.getLogger(__name__)

DONE_RUN_STATES = ("success", "failed")


def _params(context: Any = None) -> dict[str, Any]:
    """The rollout's parameters (an approval task's context also holds its form fields: left out here)."""
    names = {p.name for p in ROLLOUT_PARAMS}
    given = dict((context or get_current_context())["params"])
    return run_options({k: v for k, v in given.items() if k in names}, ROLLOUT_PARAMS)


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
    """Check the list, decide each CID (skip completed, report flag-off, launch the rest), store the plan;
    one descriptor ({rollout_id, lane}) per lane."""
    ctx = get_current_context()
    params = _params(ctx)
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
    lanes = min(params["max_concurrent"], to_launch)  # a lane waits deferred: it holds no executor slot
    log.info("rollout %s (%s): %d CIDs, %d to launch on %d lanes", rid, params["stage"], len(decided), to_launch, lanes)
    return [{"rollout_id": rid, "lane": n} for n in range(lanes)]


def approval_requests() -> list[dict[str, Any]]:
    """Stage pilot/batch: one approval request per CID to launch, in list order; stage qa: none."""
    ctx = get_current_context()
    if _params(ctx)["stage"] == Stage.QA:
        return []
    rid = rollout.rollout_id_for(ctx["dag_run"].run_id)
    stored = rollout.get_rollout(cdp_database(), rid)
    if stored is None:
        raise AirflowFailException(f"rollout {rid} has no plan")
    return [
        {"rollout_id": rid, "cid": e["cid"], "company_sso_id": e["company_sso_id"]}
        for e in stored["cids"]
        if e["decision"] == rollout.Decision.LAUNCH
    ]


# --------------------------------------------------------------------------- lanes


def _duration(launched: Any, finished: dt.datetime) -> float | None:
    if isinstance(launched, dt.datetime) and launched.tzinfo is None:
        launched = launched.replace(tzinfo=dt.UTC)
    return round((finished - launched).total_seconds(), 1) if isinstance(launched, dt.datetime) else None


def record_run_end(rollout_id: str, run_id: str, run_state: str) -> str:
    """A lane's CID run ended (the DagStateTrigger's event): its outcome from the job record, kept on its doc."""
    db = cdp_database()
    doc = next((d for d in rollout.cid_docs(db, rollout_id).values() if d.get("run_id") == run_id), None)
    if doc is None:
        raise LookupError(f"rollout {rollout_id} launched no run {run_id}")
    finished = utc_now()
    row = rollout.job_rows(db, [doc["job_id"]]).get(doc["job_id"])
    outcome = rollout.final_state(run_state, row)
    duration = _duration(doc.get("launched_at"), finished)
    rollout.update_cid(
        db,
        rollout_id,
        doc["cid"],
        finished=True,
        finished_at=finished,
        run_state=run_state,
        duration_s=duration,
        **outcome,
    )
    log.info("CID %s: run %s ended %s, job %s (%s s)", doc["cid"], run_id, run_state, outcome, duration)
    return str(outcome["state"])


def lane_step(descriptor: dict[str, Any], run_exists: Any) -> dict[str, Any]:
    """What the lane does next, with everything it decided recorded first.

    {"kind": "attach", run_id}: its own launched CID is still in flight (a retried lane) — wait for it;
    {"kind": "launch", run_id, conf}: a CID claimed now — trigger its run and wait for it;
    {"kind": "wait", until}: nothing ready (approvals or windows awaited) — sleep deferred until then;
    {"kind": "done" | "stop", gate}: nothing left to launch, or a stage gate stopped the rollout.
    CIDs whose approval ends them (rejected, expired, invalid, window missed) are claimed and recorded here,
    never launched. `run_exists(run_id) -> bool` asks Airflow (the task's own API) whether a run exists."""
    db = cdp_database()
    rid, lane = descriptor["rollout_id"], int(descriptor["lane"])
    stored = rollout.get_rollout(db, rid)
    if stored is None:
        raise LookupError(f"rollout {rid} not found")
    params = {**defaults(ROLLOUT_PARAMS), **stored["params"]}
    for doc in rollout.cid_docs(db, rid).values():  # a retried lane first re-attaches to what it had launched
        if doc.get("lane") == lane and not doc.get("finished") and not doc.get("outcome"):
            kind = "attach" if run_exists(doc["run_id"]) else "launch"
            log.info("lane %d: CID %s run %s in flight: %s", lane, doc["cid"], doc["run_id"], kind)
            return {
                "kind": kind,
                "run_id": doc["run_id"],
                "conf": doc["conf"],
                "poke_interval": params["poke_interval"],
            }
    while True:
        now = utc_now()
        docs = rollout.cid_docs(db, rid)
        stage = str(params["stage"])
        action = rollout.lane_action(
            stored["cids"],
            docs,
            approvals.approvals_of(db, rid) if stage != Stage.QA else {},
            stage=stage,
            stopped_by=rollout.gate_verdict(stage, rollout.finished_outcomes(db, rid), params["halt_gate"]),
            now=now,
            poke=dt.timedelta(seconds=params["poke_interval"]),
            expires_at=_aware(stored["created_at"]) + dt.timedelta(seconds=params["approval_timeout_s"]),
        )
        if action.kind in ("done", "stop"):
            if action.gate:
                log.warning("lane %d: the %s gate stopped the rollout: it launches nothing more", lane, action.gate)
            return {"kind": action.kind, "gate": action.gate.value if action.gate else None}
        if action.kind == "wait":
            return {"kind": "wait", "until": action.until}
        assert action.entry is not None
        cid = action.entry["cid"]
        run_id = rollout.migration_run_id(rid, cid)
        conf = {"cid": cid, "company_sso_id": action.entry["company_sso_id"], "batch_size": params["batch_size"]}
        claim = {"lane": lane, "run_id": run_id, "job_id": job_id_for(run_id, cid), "conf": conf, "finished": False}
        if action.kind == "end":
            assert action.outcome is not None
            if rollout.claim(db, rid, cid, **claim, outcome=action.outcome.value, finished_at=now):
                log.info("lane %d: CID %s not launched: %s", lane, cid, action.outcome)
            continue
        if not rollout.claim(db, rid, cid, **claim, launched_at=now):
            continue  # another lane took it first
        log.info("lane %d launches CID %s as run %s", lane, cid, run_id)
        return {"kind": "launch", "run_id": run_id, "conf": conf, "poke_interval": params["poke_interval"]}


def _aware(moment: Any) -> dt.datetime:
    if isinstance(moment, dt.datetime):
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return utc_now()


def lane_summary(descriptor: dict[str, Any]) -> dict[str, Any]:
    """What the lane did (its return value): the CIDs it claimed and how each ended."""
    docs = rollout.cid_docs(cdp_database(), descriptor["rollout_id"]).values()
    mine = [d for d in docs if d.get("lane") == int(descriptor["lane"])]
    return {
        "lane": descriptor["lane"],
        "cids": [{"cid": d["cid"], "state": d.get("outcome") or d.get("state")} for d in mine],
    }


# --------------------------------------------------------------------------- approvals


def approval_request(request: dict[str, Any], *, timeout_s: int, stage: str, link: str | None) -> dict[str, Any]:
    """The HITL request of one CID (subject and Markdown body with its preflight and dry-run figures), recorded
    pending before it is shown."""
    db = cdp_database()
    rid, cid, company = request["rollout_id"], int(request["cid"]), request["company_sso_id"]
    figures = approvals.preflight_figures(db, cid, company)
    now = utc_now()
    run_id = rollout.migration_run_id(rid, cid)
    approvals.save_approval(
        db,
        {
            "_id": approvals.approval_id(rid, cid),
            "rollout_id": rid,
            "cid": cid,
            "company_sso_id": company,
            "stage": stage,
            "run_id": run_id,
            "job_id": job_id_for(run_id, cid),
            "state": ApprovalState.PENDING.value,
            "requested_at": now,
            "timeout_at": now + dt.timedelta(seconds=timeout_s),
            "figures": figures,
            "required_actions_url": link,
        },
    )
    return {
        "subject": f"CRM notes migration ({stage}): approve CID {cid} → company {company}?",
        "body": approvals.request_body(cid, company, stage, figures),
    }


def record_approval(request: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """The answer (or the timeout) of one CID's request, kept on its approval record; returns the decision."""
    db = cdp_database()
    rid, cid = request["rollout_id"], int(request["cid"])
    stored = approvals.approvals_of(db, rid).get(cid) or {
        "_id": approvals.approval_id(rid, cid),
        "rollout_id": rid,
        "cid": cid,
    }
    if event.get("error_type") == "timeout":
        decision: dict[str, Any] = {"state": ApprovalState.EXPIRED.value, "at": utc_now(), "detail": event.get("error")}
    elif "error" in event:
        raise AirflowFailException(f"approval of CID {cid}: {event.get('error_type')}: {event.get('error')}")
    else:
        at = event.get("responded_at")
        decision = approvals.approval_decision(
            event.get("chosen_options") or [],
            event.get("params_input") or {},
            event.get("responded_by_user"),
            at if isinstance(at, dt.datetime) else utc_now(),
        )
    approvals.save_approval(db, {**stored, **decision})
    log.info("CID %s approval: %s", cid, {k: v for k, v in decision.items() if k != "chosen"})
    return approvals.approval_view({**stored, **decision})


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
            f"rollout {rid} stopped at the {totals['stopped_by']} gate (stage {totals['stage']}): halt rate "
            f"{totals['halt_rate']:.2%}, gate {totals['halt_gate']:.2%}; {totals['not_launched_halt_gate']} CIDs not launched"
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
