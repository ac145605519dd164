"""A rollout of many CIDs under the real scheduler (LocalExecutor): `crm_notes_rollout` triggered through
Airflow's REST API with a real JWT, watched through the plugin's GET /api/rollouts/{rollout_id}, as Ops would.

The list mixes a CID already completed (migrated first, in-process), a flag-off CID, fresh CIDs and one
CID that halts (coverage below the gate), with a cap of 2: the fresh CIDs before the halting one complete,
the halting one trips the Stage-3 gate (lowered to 10%: one halted CID among ≥ 4 finished exceeds it), and
the CIDs after it are never launched. The cap is checked from the migration runs' start and end times in
Airflow's REST API; the gate from the runs' creation times against the halted CID's run end.

The CIDs are tiny (8 notes, no files): the test measures the rollout machinery, not the note path.
CIDs: 9200–9209.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from devtools.stack import DAG_ID, PREFIX, Stack, wait_until
from tests.cids import cids
from tests.stack.rollout_support import NO_FILES, entry

ROLLOUT_DAG_ID = "crm_notes_rollout"
DONE, FLAG_OFF = cids(__name__)[:2]
FRESH_BEFORE = cids(__name__)[2:6]  # launched and completed before the halting CID
HALTING = cids(__name__)[6]
FRESH_AFTER = [
    9207,
    9208,
    9209,
]  # after the halting CID in the list: stopped by the gate (one may slip in while it runs)
ORDER = [DONE, FLAG_OFF, *FRESH_BEFORE, HALTING, *FRESH_AFTER]
CAP, GATE = 2, 0.1
ROLLOUT_TIMEOUT_S = 600  # generous but bounded: 2-core machine, other sessions running


def when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def max_overlap(intervals: list[tuple[dt.datetime, dt.datetime]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t opens)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def dag_runs(stack: Stack, dag_id: str) -> list[dict[str, Any]]:
    with stack.client("admin") as c:
        resp = c.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})
    assert resp.status_code == 200, resp.text
    return resp.json()["dag_runs"]


@pytest.fixture(scope="module")
def seeded(seed_cid) -> dict[int, dict]:
    from devtools.seed import SeedSpec

    specs = [SeedSpec(cid=cid, notes=8, ambiguous_contact_share=0.0, **NO_FILES) for cid in ORDER if cid != HALTING]
    specs.append(SeedSpec(cid=HALTING, notes=8, unmapped_person_share=0.5, **NO_FILES))
    return {spec.cid: seed_cid(spec) for spec in specs}


def test_a_rollout_skips_reports_respects_the_cap_and_stops_at_the_halt_gate(local_stack: Stack, seeded, run_dag, cdp):
    from notes_migration.ops.rollout import migration_run_id, rollout_id_for
    from notes_migration.stores import job_store

    started = time.monotonic()
    done = run_dag({**entry(DONE), "batch_size": 50})  # already migrated before the rollout
    assert (job_store.latest_job(cdp, DONE) or {}).get("state") == "completed_success", done
    local_stack.set_flag([c for c in ORDER if c != FLAG_OFF])

    conf = {"cids": [entry(c) for c in ORDER], "max_concurrent": CAP, "halt_gate": GATE, "poke_interval": 2}
    with local_stack.client("ops") as c:
        resp = c.post(f"/api/v2/dags/{ROLLOUT_DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["dag_run_id"]
    rid = rollout_id_for(run_id)

    def rollout_done() -> tuple[bool, Any]:
        with local_stack.client("admin") as c:
            state = c.get(f"/api/v2/dags/{ROLLOUT_DAG_ID}/dagRuns/{run_id}").json()["state"]
        return state in ("success", "failed"), state

    run_state = wait_until(f"rollout run {run_id} to end", ROLLOUT_TIMEOUT_S, rollout_done, 3)
    elapsed = time.monotonic() - started
    print(f"\n[rollout] {len(ORDER)} CIDs, cap {CAP}: ended {run_state} in {elapsed:.0f} s (seed excluded)")

    with local_stack.client("ops") as c:
        resp = c.get(f"{PREFIX}/api/rollouts/{rid}")
        listed = c.get(f"{PREFIX}/api/rollouts").json()["rollouts"]
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert report["state"] == "stopped_at_gate", report
    assert run_state == "failed"  # the report task fails a rollout the gate stopped (after storing the report)
    assert any(r["rollout_id"] == rid and r["state"] == "stopped_at_gate" for r in listed)
    rows = {r["cid"]: r for r in report["cids"]}
    assert [r["cid"] for r in report["cids"]] == ORDER  # list order kept

    assert rows[DONE]["decision"] == "skipped_already_completed" and "run_id" not in rows[DONE]
    assert rows[FLAG_OFF]["decision"] == "not_launched_flag_off" and "run_id" not in rows[FLAG_OFF]
    for cid in FRESH_BEFORE:
        row = rows[cid]
        assert (row["decision"], row["progress"], row["state"]) == ("launch", "finished", "completed_success"), row
        assert row["run_id"] == migration_run_id(rid, cid) and row["run_state"] == "success"
        assert row["match_pct"] == 100.0 and row["failure_rate"] == 0.0 and row["duration_s"] > 0
    halted = rows[HALTING]
    assert (halted["progress"], halted["state"], halted["halted_reason"]) == (
        "finished",
        "halted",
        "COVERAGE_BELOW_GATE",
    ), halted
    after = [rows[c] for c in FRESH_AFTER]
    stopped = [r for r in after if r["progress"] == "not_launched_halt_gate"]
    slipped = [r for r in after if r["progress"] == "finished"]  # launched while the halting CID still ran
    assert len(stopped) + len(slipped) == len(after) and stopped, after
    assert all(r["state"] == "completed_success" for r in slipped)
    totals = report["totals"]
    assert totals["gate_tripped"] is True and totals["halt_gate"] == GATE
    assert totals["skipped_already_completed"] == 1 and totals["not_launched_flag_off"] == 1
    assert totals["halted"] == 1 and totals["completed_success"] == len(FRESH_BEFORE) + len(slipped)
    assert totals["not_launched_halt_gate"] == len(stopped)
    assert totals["halt_rate"] == round(1 / (len(FRESH_BEFORE) + len(slipped) + 1), 6)

    # Airflow's view: exactly the launched CIDs have migration runs, never more than CAP running at once
    runs = {r["dag_run_id"]: r for r in dag_runs(local_stack, DAG_ID) if r["dag_run_id"].startswith(f"{rid}__")}
    launched = {c for c in ORDER if migration_run_id(rid, c) in runs}
    assert launched == {*FRESH_BEFORE, HALTING, *(r["cid"] for r in slipped)}, sorted(runs)
    intervals = []
    for r in runs.values():
        start, end = when(r["start_date"]), when(r["end_date"])
        assert start and end, r
        intervals.append((start, end))
    assert max_overlap(intervals) <= CAP, intervals
    assert max_overlap(intervals) == CAP  # the cap was used, not just respected
    # the gate: no run was created after the halting CID's run ended (its job halted before that)
    halt_end = when(runs[migration_run_id(rid, HALTING)]["end_date"])
    queued = {c: when(runs[migration_run_id(rid, c)]["queued_at"]) for c in launched}
    assert halt_end is not None and all(q and q < halt_end for q in queued.values()), (halt_end, queued)
    print(f"[rollout] total with the in-process first migration: {time.monotonic() - started:.0f} s")
