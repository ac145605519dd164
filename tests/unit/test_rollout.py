"""The rollout's pure core: the list check, the plan's decisions, the Stage-3 gate, the report, the weekly figures."""

from __future__ import annotations

import datetime as dt

import pytest

from notes_migration.domain.contract import ROLLOUT_PARAMS, run_options
from notes_migration.ops import rollout as R

U = "0b7d3c1e-5a4f-4e8b-9c2d-6e7f8a9b0c1d"


def test_params_defaults_and_bounds():
    opts = run_options({"cids": [{"cid": 1, "company_sso_id": U}], "halt_gate": 0}, ROLLOUT_PARAMS)
    assert (opts["max_concurrent"], opts["halt_gate"], opts["cids_variable"]) == (4, 0.0, "")
    with pytest.raises(ValueError, match="max_concurrent"):
        run_options({"max_concurrent": 0}, ROLLOUT_PARAMS)
    with pytest.raises(ValueError, match="halt_gate"):
        run_options({"halt_gate": 1.5}, ROLLOUT_PARAMS)


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], "non-empty"),
        ("[1]", "non-empty"),
        ([{"cid": 1}], "entry 0"),
        ([{"cid": 0, "company_sso_id": U}], "positive"),
        ([{"cid": True, "company_sso_id": U}], "positive"),
        ([{"cid": 1, "company_sso_id": "nope"}], "UUID"),
        ([{"cid": 1, "company_sso_id": U}, {"cid": 1, "company_sso_id": U}], "twice"),
    ],
)
def test_bad_lists_are_refused(raw, message):
    with pytest.raises(ValueError, match=message):
        R.parse_entries(raw)


def test_plan_skips_completed_reports_flag_off_and_keeps_order():
    entries = [{"cid": c, "company_sso_id": U} for c in (5, 3, 4, 1, 2)]
    states = {5: "completed_success", 3: "halted", 4: "completed_with_errors", 1: None}
    out = R.classify(entries, states, flag_cids=[3, 4, 2, 5])
    assert [(e["cid"], e["decision"]) for e in out] == [
        (5, "skipped_already_completed"),  # completed wins over the flag
        (3, "launch"),  # a halted CID is retried
        (4, "launch"),
        (1, "not_launched_flag_off"),
        (2, "launch"),
    ]


@pytest.mark.parametrize(
    "states, gate, rate, is_open",
    [
        ([], 0.02, 0.0, True),
        (["completed_success"] * 49 + ["halted"], 0.02, 0.02, True),  # exactly at the gate: not exceeded
        (["completed_success"] * 48 + ["halted"], 0.02, 1 / 49, False),
        (["halted"], 0.02, 1.0, False),
        (["completed_with_errors", "not_started"], 0.0, 0.0, True),  # only halts count
        (["halted", "completed_success"], 0.5, 0.5, True),
    ],
)
def test_the_gate(states, gate, rate, is_open):
    assert R.halt_rate(states) == pytest.approx(rate)
    assert R.gate_open(states, gate) is is_open


def test_next_to_launch_follows_the_list_and_skips_claimed_and_not_launched():
    plan = [
        {"cid": 1, "company_sso_id": U, "decision": "skipped_already_completed"},
        {"cid": 2, "company_sso_id": U, "decision": "launch"},
        {"cid": 3, "company_sso_id": U, "decision": "not_launched_flag_off"},
        {"cid": 4, "company_sso_id": U, "decision": "launch"},
    ]
    assert R.next_to_launch(plan, [])["cid"] == 2
    assert R.next_to_launch(plan, [2])["cid"] == 4
    assert R.next_to_launch(plan, [2, 4]) is None


@pytest.mark.parametrize(
    "run_state, row, state, reason",
    [
        ("failed", None, "not_started", None),  # refused by preconditions: no job
        ("success", {"status": "completed_success"}, "completed_success", None),
        ("failed", {"status": "halted", "halted_reason": "COVERAGE_BELOW_GATE"}, "halted", "COVERAGE_BELOW_GATE"),
        ("failed", {"status": "in_progress"}, "halted", "RUN_FAILED"),  # the run died under its job
    ],
)
def test_final_state(run_state, row, state, reason):
    out = R.final_state(run_state, row)
    assert (out["state"], out["halted_reason"]) == (state, reason)


def rollout_doc(decisions, gate=0.02):
    return {
        "_id": "ro-x",
        "params": {"halt_gate": gate},
        "cids": [{"cid": c, "company_sso_id": U, "decision": d} for c, d in decisions],
    }


def finished(cid, state, job, **kw):
    return {"cid": cid, "job_id": job, "run_id": f"r{cid}", "finished": True, "state": state, "duration_s": 10.0, **kw}


def test_report_of_a_rollout_stopped_at_the_gate():
    doc = rollout_doc(
        [(1, "skipped_already_completed"), (2, "not_launched_flag_off")] + [(c, "launch") for c in (3, 4, 5, 6, 7)]
    )
    cid_docs = {
        3: finished(3, "completed_success", "j3"),
        4: finished(4, "halted", "j4", halted_reason="COVERAGE_BELOW_GATE"),
        5: {"cid": 5, "job_id": "j5", "run_id": "r5", "finished": False},
    }
    rows = {
        "j3": {"status": "completed_success", "match_pct": 100.0, "attachment_success_pct": 90.0, "notes_migrated": 20},
        "j4": {"status": "halted", "failure_rate": 0.0},
        "j5": {"status": "in_progress", "progress_pct": 40.0},
    }
    live = R.build_report(doc, cid_docs, rows)
    assert live["state"] == "running"
    assert [r.get("progress") for r in live["cids"]] == [
        None,
        None,
        "finished",
        "finished",
        "running",
        "pending",
        "pending",
    ]
    assert live["cids"][4]["progress_pct"] == 40.0

    cid_docs[5] = finished(5, "completed_success", "j5")
    rows["j5"] = {
        "status": "completed_success",
        "match_pct": 98.0,
        "attachment_success_pct": 100.0,
        "notes_migrated": 10,
    }
    final = R.build_report(doc, cid_docs, rows, final=True)
    assert final["state"] == "stopped_at_gate"
    by_cid = {r["cid"]: r for r in final["cids"]}
    assert by_cid[6]["progress"] == by_cid[7]["progress"] == "not_launched_halt_gate"
    assert by_cid[4]["state"] == "halted" and by_cid[4]["halted_reason"] == "COVERAGE_BELOW_GATE"
    t = final["totals"]
    assert (t["cids"], t["to_launch"], t["skipped_already_completed"], t["not_launched_flag_off"]) == (7, 5, 1, 1)
    assert (t["launched"], t["finished"], t["not_launched_halt_gate"], t["halted"], t["completed_success"]) == (
        3,
        3,
        2,
        1,
        2,
    )
    assert t["halt_rate"] == pytest.approx(1 / 3, abs=1e-6) and t["gate_tripped"] is True
    assert t["mean_match_pct"] == 99.0 and t["mean_attachment_success_pct"] == 95.0 and t["notes_migrated"] == 30


def test_report_of_a_complete_rollout_and_of_a_lost_lane():
    doc = rollout_doc([(1, "launch"), (2, "launch")], gate=0.5)
    docs = {1: finished(1, "completed_success", "j1")}
    assert R.build_report(doc, docs, {}, final=True)["state"] == "incomplete"  # 2 never launched, gate open
    docs[2] = finished(2, "halted", "j2")
    out = R.build_report(doc, docs, {}, final=True)
    assert out["state"] == "completed" and out["totals"]["halt_rate"] == 0.5 and not out["totals"]["gate_tripped"]


def test_weekly_aggregate():
    end = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    week, start, _ = R.week_window(end)
    assert week == "2026-W49" and start == dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    rows = [
        {
            "cid": 1,
            "status": "completed_success",
            "match_pct": 100.0,
            "attachment_success_pct": 100.0,
            "notes_migrated": 5,
        },
        {
            "cid": 2,
            "status": "completed_with_errors",
            "match_pct": 97.0,
            "attachment_success_pct": 80.0,
            "notes_migrated": 3,
        },
        {"cid": 3, "status": "halted", "match_pct": None, "attachment_success_pct": None},
        {"cid": 4, "status": "in_progress"},
    ]
    out = R.weekly_aggregate(rows, start, end)
    assert (out["jobs_ended"], out["cids_completed"], out["cids_completed_with_errors"], out["cids_halted"]) == (
        3,
        1,
        1,
        1,
    )
    assert out["mean_match_pct"] == 98.5 and out["mean_attachment_success_pct"] == 90.0
    assert (
        out["halt_rate"] == pytest.approx(1 / 3, abs=1e-6) and out["cids"] == [1, 2, 3] and out["notes_migrated"] == 8
    )


def test_ids_are_stable():
    assert R.rollout_id_for("manual__x") == R.rollout_id_for("manual__x") != R.rollout_id_for("manual__y")
    assert R.migration_run_id("ro-1", 7) == "ro-1__cid_7"


# --------------------------------------------------------------------------- Stage 2/3: approvals, lanes, gates

from notes_migration.ops import approvals as A  # noqa: E402

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
POKE = dt.timedelta(seconds=10)


@pytest.mark.parametrize(
    "chosen, fields, state, detail",
    [
        (["Approve"], {"window_start": "2026-03-01T12:00:00Z", "window_end": "2026-03-01T16:00:00Z"}, "approved", None),
        (
            ["Approve"],
            {"window_start": "2026-03-01T12:00:00", "window_end": "2026-03-01T16:00:00+00:00"},
            "approved",
            None,
        ),
        (["Reject"], {}, "rejected", None),
        (["Approve"], {"window_start": None, "window_end": "2026-03-01T16:00:00Z"}, "invalid", "window"),
        (["Approve"], {"window_start": "tomorrow", "window_end": "2026-03-01T16:00:00Z"}, "invalid", "window"),
        (
            ["Approve"],
            {"window_start": "2026-03-01T12:00:00+02:00", "window_end": "2026-03-01T16:00:00Z"},
            "invalid",
            "UTC",
        ),
        (
            ["Approve"],
            {"window_start": "2026-03-01T16:00:00Z", "window_end": "2026-03-01T12:00:00Z"},
            "invalid",
            "after",
        ),
    ],
)
def test_approval_decision(chosen, fields, state, detail):
    out = A.approval_decision(chosen, {**fields, "reference": "CSM-42"}, {"id": "ops", "name": "ops"}, T0)
    assert out["state"] == state and out["reference"] == "CSM-42" and out["by"] == {"id": "ops", "name": "ops"}
    if detail:
        assert detail in out["detail"]
    if state == "approved":
        assert out["window_start"] == T0 and out["window_end"] == T0 + dt.timedelta(hours=4)


def plan_of(*cids):
    return [{"cid": c, "company_sso_id": U, "decision": "launch"} for c in cids]


def approved(start, end):
    return {"state": "approved", "window_start": start, "window_end": end}


def act(plan, claimed, approvals, stage="pilot", now=T0, stopped_by=None):
    return R.lane_action(
        plan,
        claimed,
        approvals,
        stage=stage,
        stopped_by=stopped_by,
        now=now,
        poke=POKE,
        expires_at=T0 + dt.timedelta(days=3),
    )


def test_lane_qa_launches_in_list_order_without_approvals():
    a = act(plan_of(1, 2), [1], {}, stage="qa")
    assert (a.kind, a.entry["cid"]) == ("launch", 2)
    assert act(plan_of(1, 2), [1, 2], {}, stage="qa").kind == "done"


def test_lane_never_launches_an_unapproved_cid_and_passes_over_waiting_ones():
    h = dt.timedelta(hours=1)
    plan = plan_of(1, 2, 3, 4, 5)
    approvals = {
        1: {"state": "pending"},  # waits for an answer
        2: approved(T0 + 20 * POKE, T0 + h),  # window opens later
        3: {"state": "rejected"},
    }
    a = act(plan, [], approvals)
    assert (a.kind, a.entry["cid"], a.outcome) == ("end", 3, "CSM_REJECTED")
    a = act(plan, [3], approvals)
    assert (a.kind, a.until) == ("wait", T0 + POKE)  # 4 and 5 have no record yet: pending; poll
    approvals.update({4: {"state": "expired"}, 5: approved(T0 - h, T0 - POKE)})
    assert act(plan, [3], approvals).outcome == "APPROVAL_EXPIRED"
    assert act(plan, [3, 4], approvals).outcome == "WINDOW_MISSED"
    approvals[1] = {"state": "invalid"}
    assert act(plan, [3, 4, 5], approvals).outcome == "APPROVAL_INVALID"
    a = act(plan, [1, 3, 4, 5], approvals)
    assert (a.kind, a.until) == ("wait", T0 + 20 * POKE)  # only a window awaited: sleep until it opens
    a = act(plan, [1, 3, 4, 5], approvals, now=T0 + 20 * POKE)
    assert (a.kind, a.entry["cid"]) == ("launch", 2)


def test_lane_expires_a_request_nobody_resolved_after_its_timeout():
    approvals = {1: {"state": "pending", "timeout_at": T0}}
    assert act(plan_of(1), [], approvals).kind == "wait"
    assert act(plan_of(1), [], approvals, now=T0 + A.APPROVAL_GRACE).outcome == "APPROVAL_EXPIRED"


def test_lane_stops_at_a_gate():
    a = act(plan_of(1), [], {}, stage="qa", stopped_by=R.Gate.HALT_RATE)
    assert (a.kind, a.gate) == ("stop", "halt_rate")


@pytest.mark.parametrize(
    "stage, finished, gate",
    [
        ("pilot", [("completed_success", None), ("halted", "COVERAGE_BELOW_GATE")], None),  # a data reason
        ("pilot", [("completed_success", None), ("halted", "FAILURE_RATE_EXCEEDED")], None),
        ("pilot", [("halted", "RUN_FAILED")], "pilot_pipeline_bug"),
        ("pilot", [("halted", "CRM_EXTRACT_FAILED")], "pilot_pipeline_bug"),
        ("batch", [("halted", "RUN_FAILED")] + [("completed_success", None)] * 49, None),  # 2 % is not above
        ("batch", [("halted", "COVERAGE_BELOW_GATE")] * 2 + [("completed_success", None)] * 48, "halt_rate"),
        ("qa", [("halted", "RUN_FAILED")], "halt_rate"),
    ],
)
def test_stage_gates(stage, finished, gate):
    assert R.gate_verdict(stage, finished, 0.02) == gate


def test_report_of_a_pilot_with_approvals():
    doc = rollout_doc([(c, "launch") for c in (1, 2, 3, 4)])
    doc["params"]["stage"] = "pilot"
    end = T0 + dt.timedelta(minutes=30)
    docs = {
        1: finished(1, "completed_success", "j1", finished_at=T0 + dt.timedelta(hours=1)),
        3: {"cid": 3, "job_id": "j3", "finished": False, "outcome": "CSM_REJECTED", "finished_at": T0},
        4: {"cid": 4, "job_id": "j4", "finished": False, "outcome": "APPROVAL_EXPIRED", "finished_at": T0},
    }
    approvals = {
        1: {**approved(T0, end), "by": {"id": "ops", "name": "ops"}, "reference": "CSM-1"},
        2: {"state": "pending", "required_actions_url": "http://x/required_actions"},
        3: {"state": "rejected"},
        4: {"state": "expired"},
    }
    live = R.build_report(doc, docs, {}, approvals=approvals, now=T0)
    rows = {r["cid"]: r for r in live["cids"]}
    assert rows[1]["approval"]["reference"] == "CSM-1" and rows[1]["window_overrun"] is True  # ended after window_end
    assert rows[2]["approval"]["state"] == "pending" and rows[2]["progress"] == "pending"
    assert rows[3]["progress"] == rows[4]["progress"] == "not_launched_approval"
    t = live["totals"]
    assert (t["CSM_REJECTED"], t["APPROVAL_EXPIRED"], t["awaiting_approval"], t["window_overrun"]) == (1, 1, 1, 1)
    assert t["halted"] == 0 and t["halt_rate"] == 0 and t["stopped_by"] is None and t["finished"] == 1
