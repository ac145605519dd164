"""Rollout of many CIDs (PRD Stage 2/3): the plan, the Stage-3 halt-rate gate, the report, the weekly aggregate.

A rollout (one run of `crm_notes_rollout`) takes an ordered list of `{cid, company_sso_id}`. Its plan
skips CIDs whose latest real job is `completed_success` and reports (never triggers) CIDs whose flag is
off; the others are launched in order by `max_concurrent` lanes, each launching one `crm_notes_migration`
run at a time and waiting for it. Before every launch a lane checks the gate: the halt rate among the CIDs
this rollout already finished (from their job records) must not exceed `halt_gate`; once it does, no lane
launches again and the CIDs left are reported `not_launched_halt_gate`.

Storage (FerretDB updates are not atomic under concurrency, so no document has two writers): the rollout
document (`crm_migration_rollouts`) is written by the plan and the report tasks only; each launched CID has
its own document (`crm_migration_rollout_cids`, `_id = rollout:cid`) written by the lane that claimed it:
the unique `_id` makes the claim atomic. The pure functions here decide; the `*_db` helpers read and write.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from notes_migration.domain.codes import (
    DATA_HALT_REASONS,
    ApprovalState,
    Gate,
    Reason,
    RolloutOutcome,
    Stage,
    State,
)
from notes_migration.domain.contract import ROLLOUT_DAG_ID, UUID_RE
from notes_migration.ops.approvals import APPROVAL_GRACE, approval_view, approvals_of

_ROLLOUT_NS = uuid.UUID("1d6f3f0e-2b7c-4f53-9a0e-7c5b2a9d4e11")


class Decision(StrEnum):
    """What the plan decided for one CID of the list."""

    LAUNCH = "launch"
    SKIP_COMPLETED = "skipped_already_completed"  # latest real job completed_success: nothing to do
    FLAG_OFF = "not_launched_flag_off"  # reported, never triggered (the run would refuse FLAG_DISABLED)


class Progress(StrEnum):
    """Where a CID to launch stands in the rollout."""

    PENDING = "pending"  # not launched yet
    RUNNING = "running"  # its migration run is under way
    FINISHED = "finished"  # its migration run ended (state: the job's)
    NOT_LAUNCHED_GATE = "not_launched_halt_gate"  # the gate had tripped before its turn
    NOT_LAUNCHED = "not_launched"  # the rollout ended without launching it (a lane failed)
    NOT_LAUNCHED_APPROVAL = "not_launched_approval"  # rejected, expired, invalid or window missed: see its outcome
    LANE_LOST = "lane_lost"  # launched, but the rollout's run died before its lane recorded the end (see its status)


class RolloutState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # every CID to launch was launched and finished
    STOPPED_AT_GATE = "stopped_at_gate"
    INCOMPLETE = "incomplete"  # some CID neither launched nor stopped by the gate
    RUN_FAILED = "run_failed"  # its Airflow run ended (failed, killed, marked) or is gone before writing its report


# --------------------------------------------------------------------------- pure


def rollout_id_for(run_id: str) -> str:
    """Stable per rollout DAG run: a retried task finds the same rollout."""
    return "ro-" + uuid.uuid5(_ROLLOUT_NS, f"{ROLLOUT_DAG_ID}/{run_id}").hex[:16]


def migration_run_id(rollout_id: str, cid: int) -> str:
    """The run id of a CID's migration run in a rollout: deterministic, so a retried lane never launches twice."""
    return f"{rollout_id}__cid_{cid}"


def parse_entries(raw: Any) -> list[dict[str, Any]]:
    """The rollout list, checked: a list of {cid: int ≥ 1, company_sso_id: UUID}, each CID once."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("the rollout list must be a non-empty JSON list of {cid, company_sso_id}")
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for n, item in enumerate(raw):
        if not isinstance(item, Mapping) or set(item) != {"cid", "company_sso_id"}:
            raise ValueError(f"entry {n} must be {{cid, company_sso_id}}, got {item!r}")
        cid, company = item["cid"], item["company_sso_id"]
        if isinstance(cid, bool) or not isinstance(cid, int) or cid < 1:
            raise ValueError(f"entry {n}: cid must be a positive integer, got {cid!r}")
        if not isinstance(company, str) or not UUID_RE.fullmatch(company):
            raise ValueError(f"entry {n}: company_sso_id must be a UUID, got {company!r}")
        if cid in seen:
            raise ValueError(f"entry {n}: CID {cid} is listed twice")
        seen.add(cid)
        out.append({"cid": cid, "company_sso_id": company})
    return out


def classify(
    entries: Sequence[Mapping[str, Any]], latest_states: Mapping[int, str | None], flag_cids: Iterable[int]
) -> list[dict[str, Any]]:
    """Each entry with its decision, in list order: completed CIDs are skipped, flag-off CIDs reported."""
    flag = set(flag_cids)
    out = []
    for e in entries:
        if latest_states.get(e["cid"]) == State.COMPLETED_SUCCESS:
            decision = Decision.SKIP_COMPLETED
        elif e["cid"] not in flag:
            decision = Decision.FLAG_OFF
        else:
            decision = Decision.LAUNCH
        out.append({"cid": e["cid"], "company_sso_id": e["company_sso_id"], "decision": decision.value})
    return out


def halt_rate(finished_states: Sequence[str]) -> float:
    """Halted CIDs / finished CIDs of the rollout (0 when none finished)."""
    return sum(1 for s in finished_states if s == State.HALTED) / len(finished_states) if finished_states else 0.0


def gate_open(finished_states: Sequence[str], gate: float) -> bool:
    """The Stage-3 gate: another CID may be launched while the halt rate does not exceed the gate."""
    return halt_rate(finished_states) <= gate


def gate_verdict(stage: str, finished: Sequence[tuple[str, str | None]], gate: float) -> Gate | None:
    """The stage gate (PRD §14) over the (state, halted reason) of the CIDs this rollout finished: pilot stops
    at the first halt whose reason is not a data reason (a pipeline bug), whatever the halt rate; batch and qa
    stop once the halt rate exceeds `gate`. None: launching may go on."""
    if stage == Stage.PILOT:
        bug = any(s == State.HALTED and r not in DATA_HALT_REASONS for s, r in finished)
        return Gate.PILOT_PIPELINE_BUG if bug else None
    if not gate_open([s for s, _ in finished], gate):
        return Gate.HALT_RATE
    return None


# --------------------------------------------------------------------------- lanes (pure)

_ENDING = {
    ApprovalState.REJECTED: RolloutOutcome.CSM_REJECTED,
    ApprovalState.EXPIRED: RolloutOutcome.APPROVAL_EXPIRED,
    ApprovalState.INVALID: RolloutOutcome.APPROVAL_INVALID,
}


@dataclass(frozen=True)
class LaneAction:
    """What a lane does next: launch a CID, end one without launching it, wait (deferred) until a moment,
    stop at a gate, or finish."""

    kind: str  # "launch" | "end" | "wait" | "stop" | "done"
    entry: dict[str, Any] | None = None
    outcome: RolloutOutcome | None = None
    until: dt.datetime | None = None
    gate: Gate | None = None


def _aware(moment: Any) -> dt.datetime | None:
    if not isinstance(moment, dt.datetime):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def lane_action(
    plan: Sequence[Mapping[str, Any]],
    claimed: Iterable[int],
    approvals: Mapping[int, Mapping[str, Any]],
    *,
    stage: str,
    stopped_by: Gate | None,
    now: dt.datetime,
    poke: dt.timedelta,
    expires_at: dt.datetime,
) -> LaneAction:
    """The next thing a lane does, in list order among the CIDs no lane has claimed (pure).

    qa: the first unclaimed CID is launched. pilot/batch: a CID is launched only once approved and inside
    its window; a rejected, expired or invalid answer, or a window already over, ends it (never launched); a
    CID still waiting for an answer or for its window_start is passed over for the next one, and when none
    is ready the lane waits until the earliest window_start, or `poke` when an answer is awaited. A request
    with no answer recorded by `expires_at` (its timeout + grace: the approval task died) is expired."""
    if stopped_by is not None:
        return LaneAction("stop", gate=stopped_by)
    taken = set(claimed)
    moments: list[dt.datetime] = []
    for e in plan:
        if e["decision"] != Decision.LAUNCH or e["cid"] in taken:
            continue
        if stage == Stage.QA:
            return LaneAction("launch", entry=dict(e))
        a = approvals.get(e["cid"]) or {}
        state = a.get("state") or ApprovalState.PENDING.value
        if state == ApprovalState.PENDING:
            if now >= (_aware(a.get("timeout_at")) or expires_at - APPROVAL_GRACE) + APPROVAL_GRACE:
                return LaneAction("end", entry=dict(e), outcome=RolloutOutcome.APPROVAL_EXPIRED)
            moments.append(now + poke)
            continue
        if state != ApprovalState.APPROVED:
            return LaneAction("end", entry=dict(e), outcome=_ENDING[ApprovalState(state)])
        start, end = _aware(a.get("window_start")), _aware(a.get("window_end"))
        if start is None or end is None:
            return LaneAction("end", entry=dict(e), outcome=RolloutOutcome.APPROVAL_INVALID)
        if now >= end:
            return LaneAction("end", entry=dict(e), outcome=RolloutOutcome.WINDOW_MISSED)
        if now < start:
            moments.append(start)
            continue
        return LaneAction("launch", entry=dict(e))
    if moments:
        return LaneAction("wait", until=min(moments))
    return LaneAction("done")


def next_to_launch(plan: Sequence[Mapping[str, Any]], claimed: Iterable[int]) -> dict[str, Any] | None:
    """The first CID to launch that no lane has claimed, in list order."""
    taken = set(claimed)
    return next((dict(e) for e in plan if e["decision"] == Decision.LAUNCH and e["cid"] not in taken), None)


def final_state(run_state: str, job_row: Mapping[str, Any] | None) -> dict[str, Any]:
    """A finished migration run's outcome for the report, from its Airflow state and its job's fleet row.

    No job: the run's preconditions refused it (nothing written). A job still in_progress in a run Airflow
    finished died on the way: halted, RUN_FAILED (as the status endpoint says)."""
    if job_row is None:
        return {"state": State.NOT_STARTED.value, "halted_reason": None, "refused": True}
    state, reason = job_row["status"], job_row.get("halted_reason")
    if state == State.IN_PROGRESS and run_state in ("success", "failed"):
        state, reason = State.HALTED.value, Reason.RUN_FAILED.value
    return {"state": state, "halted_reason": reason, "refused": False}


_ROW_FIELDS = (
    "job_id",
    "match_pct",
    "failure_rate",
    "attachment_success_pct",
    "notes_migrated",
    "notes_total",
    "progress_pct",
)


def _mean(values: Iterable[float | None]) -> float | None:
    xs = [float(v) for v in values if isinstance(v, int | float)]
    return round(sum(xs) / len(xs), 2) if xs else None


def build_report(
    rollout: Mapping[str, Any],
    cid_docs: Mapping[int, Mapping[str, Any]],
    job_rows: Mapping[str, Mapping[str, Any]],
    *,
    final: bool = False,
    lanes_dead: bool = False,
    approvals: Mapping[int, Mapping[str, Any]] | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The rollout's report (pure): per CID its decision, approval, progress, final state, match_pct, failure
    rate, attachment success and duration; then the rollout's totals, halt rate and the gate that stopped it.
    `final`: the lanes are done, so a CID to launch that none launched was stopped by the gate (or lost to a
    failed lane). `lanes_dead`: the rollout's run died, so a launched CID its lane never recorded is
    lane_lost, not running. A CID whose run was still going at its window_end is flagged `window_overrun`."""
    gate = float(rollout["params"]["halt_gate"])
    stage = str(rollout["params"].get("stage") or Stage.QA.value)
    now = now or _now()
    per_cid = [
        _cid_row(e, cid_docs.get(e["cid"]), job_rows, stage, (approvals or {}).get(e["cid"]), now, lanes_dead)
        for e in rollout["cids"]
    ]
    ended = [(r.get("state") or "", r.get("halted_reason")) for r in per_cid if r.get("progress") == Progress.FINISHED]
    stopped_by = gate_verdict(stage, ended, gate)
    tripped = stopped_by is not None
    if final:
        for row in per_cid:
            if row.get("progress") == Progress.PENDING:
                row["progress"] = (Progress.NOT_LAUNCHED_GATE if tripped else Progress.NOT_LAUNCHED).value
    totals = _totals(per_cid, gate, stage, halt_rate([s for s, _ in ended]), stopped_by)
    if not final:
        state = RolloutState.RUNNING
    elif tripped and totals["not_launched_halt_gate"]:
        state = RolloutState.STOPPED_AT_GATE
    elif totals["not_launched"]:
        state = RolloutState.INCOMPLETE
    else:
        state = RolloutState.COMPLETED
    return {"state": state.value, "cids": per_cid, "totals": totals}


def _cid_row(
    e: Mapping[str, Any],
    doc: Mapping[str, Any] | None,
    job_rows: Mapping[str, Mapping[str, Any]],
    stage: str,
    approval: Mapping[str, Any] | None,
    now: dt.datetime,
    lanes_dead: bool,
) -> dict[str, Any]:
    """One CID's line of the report, from its plan entry, its lane's record and its job."""
    row: dict[str, Any] = {"cid": e["cid"], "company_sso_id": e["company_sso_id"], "decision": e["decision"]}
    if e["decision"] != Decision.LAUNCH:
        return row
    if stage != Stage.QA:
        row["approval"] = approval_view(approval)
    if doc is None:
        row["progress"] = Progress.PENDING.value
        return row
    if doc.get("outcome"):
        row.update(progress=Progress.NOT_LAUNCHED_APPROVAL.value, outcome=doc["outcome"])
        row["finished_at"] = doc.get("finished_at")
        return row
    row.update({k: doc.get(k) for k in ("run_id", "lane", "launched_at", "finished_at", "run_state", "duration_s")})
    job = job_rows.get(doc.get("job_id") or "")
    if job:
        row.update({k: job.get(k) for k in _ROW_FIELDS})
        row["state"] = job.get("status")
    if doc.get("finished"):
        row.update(progress=Progress.FINISHED.value, state=doc.get("state"), halted_reason=doc.get("halted_reason"))
    else:
        row["progress"] = (Progress.LANE_LOST if lanes_dead else Progress.RUNNING).value
    window_end = _aware((row.get("approval") or {}).get("window_end"))
    if window_end is not None and (_aware(doc.get("finished_at")) or now) > window_end:
        row["window_overrun"] = True  # not killed (PRD: a running CID finishes), but flagged
    return row


def _totals(
    per_cid: list[dict[str, Any]], gate: float, stage: str, rate: float, stopped_by: Gate | None
) -> dict[str, Any]:
    """The report's totals: CIDs by decision, progress, final state and rollout outcome; the means; the gate."""
    by = lambda key, value: sum(1 for r in per_cid if r.get(key) == value)  # noqa: E731
    finished = [r for r in per_cid if r.get("progress") == Progress.FINISHED]
    launched = (Progress.RUNNING, Progress.FINISHED, Progress.LANE_LOST)
    return {
        "cids": len(per_cid),
        "to_launch": by("decision", Decision.LAUNCH),
        "skipped_already_completed": by("decision", Decision.SKIP_COMPLETED),
        "not_launched_flag_off": by("decision", Decision.FLAG_OFF),
        "launched": sum(1 for r in per_cid if r.get("progress") in launched),
        "running": by("progress", Progress.RUNNING),
        "lane_lost": by("progress", Progress.LANE_LOST),
        "pending": by("progress", Progress.PENDING),
        "finished": len(finished),
        "not_launched_halt_gate": by("progress", Progress.NOT_LAUNCHED_GATE),
        "not_launched": by("progress", Progress.NOT_LAUNCHED),
        **{s.value: sum(1 for r in finished if r.get("state") == s) for s in State if s != State.IN_PROGRESS},
        "notes_migrated": sum(int(r.get("notes_migrated") or 0) for r in finished),
        "mean_match_pct": _mean(r.get("match_pct") for r in finished),
        "mean_attachment_success_pct": _mean(r.get("attachment_success_pct") for r in finished),
        "mean_duration_s": _mean(r.get("duration_s") for r in finished),
        "halt_rate": round(rate, 6),
        "halt_gate": gate,
        "gate_tripped": stopped_by is not None,
        "stage": stage,
        "stopped_by": stopped_by.value if stopped_by else None,
        "awaiting_approval": sum(
            1
            for r in per_cid
            if r.get("progress") == Progress.PENDING and (r.get("approval") or {}).get("state") == ApprovalState.PENDING
        ),
        "not_launched_approval": by("progress", Progress.NOT_LAUNCHED_APPROVAL),
        **{o.value: by("outcome", o) for o in RolloutOutcome},
        "window_overrun": sum(1 for r in per_cid if r.get("window_overrun")),
    }


def week_window(end: dt.datetime) -> tuple[str, dt.datetime, dt.datetime]:
    """The 7 days before `end`, labelled by the ISO week of their first day (e.g. `2026-W48`)."""
    start = end - dt.timedelta(days=7)
    iso = start.isocalendar()
    return f"{iso.year}-W{iso.week:02d}", start, end


def weekly_aggregate(rows: Sequence[Mapping[str, Any]], start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """PRD §12 weekly figures (pure) from the fleet rows of the real jobs that ended in [start, end):
    CIDs completed and halted, mean match_pct, attachment success and the halt rate."""
    ended = [r for r in rows if r.get("status") in _ENDED]
    completed = {r["cid"] for r in ended if r["status"] == State.COMPLETED_SUCCESS}
    with_errors = {r["cid"] for r in ended if r["status"] == State.COMPLETED_WITH_ERRORS}
    halted = {r["cid"] for r in ended if r["status"] == State.HALTED}
    return {
        "window_start": start,
        "window_end": end,
        "jobs_ended": len(ended),
        "cids_completed": len(completed),
        "cids_completed_with_errors": len(with_errors),
        "cids_halted": len(halted),
        "cids": sorted({r["cid"] for r in ended}),
        "notes_migrated": sum(int(r.get("notes_migrated") or 0) for r in ended if r["status"] != State.HALTED),
        "mean_match_pct": _mean(r.get("match_pct") for r in ended if r["status"] != State.HALTED),
        "mean_attachment_success_pct": _mean(r.get("attachment_success_pct") for r in ended),
        "halt_rate": round(len([r for r in ended if r["status"] == State.HALTED]) / len(ended), 6) if ended else 0.0,
    }


_ENDED = (State.COMPLETED_SUCCESS, State.COMPLETED_WITH_ERRORS, State.HALTED)


# --------------------------------------------------------------------------- storage (CDP bookkeeping database)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def save_plan(db: Any, rollout: dict[str, Any]) -> None:
    """The rollout document at plan time (replaced whole: a retried plan task writes the same plan)."""
    from notes_migration.domain import config as C

    db[C.ROLLOUTS].replace_one({"_id": rollout["_id"]}, rollout, upsert=True)


def get_rollout(db: Any, rollout_id: str) -> dict[str, Any] | None:
    from notes_migration.domain import config as C

    return db[C.ROLLOUTS].find_one({"_id": rollout_id})


def cid_docs(db: Any, rollout_id: str) -> dict[int, dict[str, Any]]:
    from notes_migration.domain import config as C

    return {d["cid"]: d for d in db[C.ROLLOUT_CIDS].find({"rollout_id": rollout_id})}


def claim(db: Any, rollout_id: str, cid: int, **fields: Any) -> bool:
    """Atomically claim a CID for one lane (the unique `_id` lets exactly one insert win)."""
    from pymongo.errors import DuplicateKeyError

    from notes_migration.domain import config as C

    try:
        db[C.ROLLOUT_CIDS].insert_one({"_id": f"{rollout_id}:{cid}", "rollout_id": rollout_id, "cid": cid, **fields})
    except DuplicateKeyError:
        return False
    return True


def update_cid(db: Any, rollout_id: str, cid: int, **fields: Any) -> None:
    """Only the lane that claimed the CID writes its document."""
    from notes_migration.domain import config as C

    db[C.ROLLOUT_CIDS].update_one({"_id": f"{rollout_id}:{cid}"}, {"$set": fields})


def finished_outcomes(db: Any, rollout_id: str) -> list[tuple[str, str | None]]:
    """(final state, halted reason) of the CIDs this rollout finished, from their job records (the gates' input).

    A CID counts as soon as its job ended (e.g. halted at the coverage gate), before its run's teardown
    ends and its lane records it: another lane must not launch in between. A run that recorded no job
    (refused) or whose job stayed in_progress counts once its lane recorded it, with the lane's verdict.
    A CID ended by its approval (never launched) does not count."""
    from notes_migration.domain import config as C

    docs = [d for d in cid_docs(db, rollout_id).values() if not d.get("outcome")]
    ids = [d["job_id"] for d in docs]
    jobs = {j["_id"]: j for j in db[C.JOBS].find({"_id": {"$in": ids}}, {"state": 1, "halted": 1})}
    out: list[tuple[str, str | None]] = []
    for d in docs:
        job = jobs.get(d["job_id"]) or {}
        if job.get("state") in _ENDED:
            out.append((job["state"], (job.get("halted") or {}).get("reason")))
        elif d.get("finished"):  # no job (refused) or a dead run's job: the lane's verdict
            out.append((d.get("state") or "", d.get("halted_reason")))
    return out


def finished_job_states(db: Any, rollout_id: str) -> list[str]:
    return [s for s, _ in finished_outcomes(db, rollout_id)]


def job_rows(db: Any, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{job_id: its fleet row} (status, match_pct, failure rate, attachment success …), two queries."""
    from notes_migration.domain import config as C
    from notes_migration.ops.queries import fleet_row
    from notes_migration.stores import job_store

    jobs = list(db[C.JOBS].find({"_id": {"$in": list(job_ids)}}))
    pages = job_store.pages_of_jobs(db, [j["_id"] for j in jobs])
    return {j["_id"]: fleet_row(j, pages.get(j["_id"], [])) for j in jobs}


def report_of(db: Any, rollout: Mapping[str, Any], *, final: bool = False, lanes_dead: bool = False) -> dict[str, Any]:
    docs = cid_docs(db, rollout["_id"])
    rows = job_rows(db, [d["job_id"] for d in docs.values()])
    approvals = approvals_of(db, rollout["_id"])
    return build_report(rollout, docs, rows, final=final, lanes_dead=lanes_dead, approvals=approvals)


RUN_NOT_FOUND = "not_found"  # run_states' answer for a run the Airflow metadata DB does not have


def rollout_view(
    db: Any, rollout_id: str, run_states: Callable[[list[str]], Mapping[str, str]] | None = None
) -> dict[str, Any] | None:
    """A rollout as the Ops API shows it: its stored report when it ended, else its live progress.

    `run_states` ({dag_run_id: Airflow state, or RUN_NOT_FOUND}) is how the view learns that a rollout
    without a report will never write one: its run ended without it (failed, killed, marked failed) or is
    gone from Airflow. It is then shown `run_failed` with RUN_FAILED and the run's state, its CIDs as they
    stand (a CID no lane launched is not_launched, one whose lane never recorded the end lane_lost: its
    own status says how its run ended), never `running` forever."""
    from notes_migration.domain.plain import as_plain

    rollout = get_rollout(db, rollout_id)
    if rollout is None:
        return None
    head = {k: rollout.get(k) for k in ("_id", "dag_run_id", "params", "created_at", "finished_at")}
    head["rollout_id"] = head.pop("_id")
    report = rollout.get("report")
    if report is None:
        run_state = (run_states([rollout["dag_run_id"]]) if run_states else {}).get(rollout["dag_run_id"], "running")
        if run_state in ("failed", "success", RUN_NOT_FOUND):
            report = {
                **report_of(db, rollout, final=True, lanes_dead=True),
                "state": RolloutState.RUN_FAILED.value,
                "reason_code": Reason.RUN_FAILED.value,
                "run_state": run_state,
            }
        else:
            report = report_of(db, rollout)
    return as_plain({**head, **report})


def list_rollouts(
    db: Any, limit: int = 50, run_states: Callable[[list[str]], Mapping[str, str]] | None = None
) -> list[dict[str, Any]]:
    """The newest rollouts with their totals (live ones computed)."""
    from notes_migration.domain import config as C

    ids = [d["_id"] for d in db[C.ROLLOUTS].find({}, {"_id": 1}).sort("created_at", -1).limit(limit)]
    out = []
    for rid in ids:
        view = rollout_view(db, rid, run_states)
        if view:
            out.append(
                {k: view[k] for k in ("rollout_id", "dag_run_id", "state", "created_at", "finished_at", "totals")}
            )
    return out


def save_weekly(db: Any, end: dt.datetime) -> dict[str, Any]:
    """Compute and keep the weekly aggregate of the 7 days before `end` (one document per week, replaced)."""
    from notes_migration.domain import config as C
    from notes_migration.ops.queries import fleet_row
    from notes_migration.stores import job_store

    week, start, end = week_window(end)
    jobs = list(db[C.JOBS].find({"config.dry_run": False, "updated_at": {"$gte": start, "$lt": end}}))
    pages = job_store.pages_of_jobs(db, [j["_id"] for j in jobs])
    rows = [fleet_row(j, pages.get(j["_id"], [])) for j in jobs]
    rollouts = db[C.ROLLOUTS].count_documents({"created_at": {"$gte": start, "$lt": end}})
    doc = {"_id": week, "week": week, **weekly_aggregate(rows, start, end), "rollouts": rollouts, "computed_at": _now()}
    db[C.WEEKLY].replace_one({"_id": week}, doc, upsert=True)
    return doc


def list_weekly(db: Any, limit: int = 12) -> list[dict[str, Any]]:
    from notes_migration.domain import config as C
    from notes_migration.domain.plain import as_plain

    return [as_plain(d) or {} for d in db[C.WEEKLY].find({}).sort("window_end", -1).limit(limit)]
