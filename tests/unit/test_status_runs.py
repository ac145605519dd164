"""A status that never goes silent: Airflow's view of a CID's runs corrects the job records (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from notes_migration.domain.accounting import sum_pages
from notes_migration.domain.config import RunConfig
from notes_migration.domain.status import (
    PHASE_ATTACHMENTS,
    PHASE_NOTES,
    PHASE_PREFLIGHT,
    PHASE_VALIDATING,
    build_status,
    run_progress,
    with_airflow_runs,
)

COMPANY = "0b7d3c1e-5a4f-4e8b-9c2d-6e7f8a9b0c1d"
T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def job(state="in_progress", run_id="manual__1", **kw):
    return {
        "_id": "job-1",
        "cid": 7,
        "company_sso_id": COMPANY,
        "run_id": run_id,
        "state": state,
        "config": RunConfig(cid=7, company_sso_id=COMPANY).as_dict(),
        "created_at": T0,
        "notes_total": 1000,
        "pages_total": 2,
        **kw,
    }


def run(run_id="manual__1", state="running", failed=()):
    return {"run_id": run_id, "state": state, "failed_tasks": list(failed), "start_date": T0, "end_date": None}


PAGE = {"attempted": 500, "migrated": 495, "failed": 5, "timings_s": {"total": 2.0}}


def status_of(j, pages=(), runs=None):
    return with_airflow_runs(build_status(7, j, list(pages), {"failed": {"CONTACT_NOT_MAPPED": 5}}, now=T0), j, runs)


@pytest.mark.parametrize("airflow_state", ["failed", "success"])
def test_in_progress_job_whose_run_is_over_is_halted_run_failed(airflow_state):
    s = status_of(job(), [PAGE], [run(state=airflow_state, failed=["migrate_page[1]"])])
    assert s["status"] == "halted" and s["halted_reason"] == "RUN_FAILED"
    assert s["airflow_run"]["run_id"] == "manual__1" and s["airflow_run"]["state"] == airflow_state
    assert s["error_log_url"].endswith("/job-1/errors") and s["failure_rate"] == 0.01
    assert "progress_pct" not in s and "eta_seconds" not in s


def test_many_failed_mapped_tasks_read_as_one_line():
    failed = ["finalise"] + [f"migrate_page[{i}]" for i in range(76)]
    s = status_of(job(), [PAGE], [run(state="failed", failed=failed)])
    assert "failed: finalise, migrate_page ×76 (e.g. migrate_page[0])" in s["detail"]
    assert len(s["airflow_run"]["failed_tasks"]) == 77  # the full list stays in airflow_run


def test_running_run_keeps_the_job_in_progress():
    s = status_of(job(), [PAGE], [run(state="running")])
    assert s["status"] == "in_progress" and "halted_reason" not in s


def test_a_task_waiting_for_its_retry_is_said_with_since_when():
    """A killed page task: Airflow retries it; the status keeps in_progress and says what the run waits for."""
    since = T0 + dt.timedelta(minutes=7)
    waiting = run(state="running") | {
        "retrying_tasks": [
            {"task": "migrate_page[3]", "failed_try": 1, "since": since},
            {"task": "migrate_page[4]", "failed_try": 2, "since": since + dt.timedelta(seconds=5)},
        ]
    }
    s = status_of(job(), [PAGE], [waiting])
    assert s["status"] == "in_progress" and s["progress_pct"] > 0
    w = s["waiting_for"]
    assert (w["what"], w["tasks"], w["since"]) == (
        "task_retry",
        ["migrate_page[3]", "migrate_page[4]"],
        "2026-12-01T12:07:00Z",
    )
    assert (
        w["detail"]
        == "Airflow retries migrate_page ×2 (e.g. migrate_page[3]) (failed try 2, since 2026-12-01T12:07:00Z)"
    )
    assert "waiting_for" not in status_of(job(), [PAGE], [run(state="running")])


def test_failed_run_without_a_job_is_terminal_not_not_started():
    s = status_of(None, runs=[run("manual__2", "failed", ["preconditions"])])
    assert s["status"] == "halted" and s["halted_reason"] == "RUN_FAILED"
    assert s["airflow_run"]["failed_tasks"] == ["preconditions"] and "before it recorded a job" in s["detail"]


def test_queued_run_without_a_job_is_not_started_with_the_run_shown():
    s = status_of(None, runs=[run("manual__2", "queued")])
    assert s["status"] == "not_started" and s["latest_run"]["state"] == "queued"


def test_a_refused_rerun_does_not_hide_a_finished_job():
    done = job("completed_success", validation={"match_pct": 100.0, "found": 1000})
    s = status_of(done, [PAGE], [run("manual__2", "failed", ["preconditions"]), run("manual__1", "success")])
    assert s["status"] == "completed_success" and s["latest_run"]["run_id"] == "manual__2"


def test_progress_covers_the_attachment_phase():
    pages = [PAGE, PAGE]
    notes_done = run_progress(job(), pages, sum_pages(pages), elapsed_s=10.0)
    assert notes_done["phase"] == PHASE_ATTACHMENTS and notes_done["progress_pct"] == 50.0  # equal prior weights
    half = job(attachments={"pages_done": 1, "seconds_total": 6.0})  # files cost 3× the notes per page
    p = run_progress(half, pages, sum_pages(pages), elapsed_s=10.0)
    assert p["progress_pct"] == 75.0  # fixed weights: all notes, half the pages' files
    assert p["eta_seconds"] == 6  # measured weights: (2·1 + 6·0.5) / 8 of the time spent in 10 s
    all_done = run_progress(job(attachments={"pages_done": 2, "seconds_total": 12.0}), pages, sum_pages(pages), 10.0)
    assert all_done["phase"] == PHASE_VALIDATING and all_done["progress_pct"] == 100.0
    first = run_progress(job(), [PAGE], sum_pages([PAGE]), elapsed_s=5.0)
    assert first["phase"] == PHASE_NOTES and first["progress_pct"] < 50.0


def test_before_planning_the_run_is_in_preflight():
    j = job()
    del j["pages_total"]
    p = run_progress(j, [], sum_pages([]), elapsed_s=2.0)
    assert p["phase"] == PHASE_PREFLIGHT and p["progress_pct"] == 0.0 and p["eta_seconds"] is None


def test_dry_run_progress_has_no_attachment_phase():
    dry = job(config=RunConfig(cid=7, company_sso_id=COMPANY, dry_run=True).as_dict())
    p = run_progress(dry, [PAGE, PAGE], sum_pages([PAGE, PAGE]), elapsed_s=4.0)
    assert p["phase"] == PHASE_VALIDATING and p["progress_pct"] == 100.0


def test_notes_a_halt_held_back_are_not_counted_out_of_scope():
    skips = {"skipped": {"ACTIVITY_OUT_OF_SCOPE": 3, "FAILURE_RATE_EXCEEDED": 40, "CANCELLED": 2}}
    halted = job("halted", halted={"reason": "FAILURE_RATE_EXCEEDED", "failure_rate": 0.02}, scope={"no_person": 4})
    counts = build_status(7, halted, [], {**skips, "failed": {"CONTACT_NOT_MAPPED": 9}}, now=T0)["counts"]
    assert counts["out_of_scope"] == {"ACTIVITY_OUT_OF_SCOPE": 3, "NOT_A_PERSON_NOTE": 4}
    assert counts["withheld_by_halt"] == {"FAILURE_RATE_EXCEEDED": 40, "CANCELLED": 2}
    assert counts["failed"] == {"CONTACT_NOT_MAPPED": 9}


def test_a_job_whose_airflow_run_was_deleted_is_halted_run_not_found():
    deleted = status_of(job(), [PAGE], [])  # Airflow was asked and has no run of the CID
    assert (deleted["status"], deleted["halted_reason"]) == ("halted", "RUN_NOT_FOUND")
    assert deleted["airflow_run"]["state"] == "not_found" and "deleted" in deleted["detail"]
    older = run("manual__0", state="success") | {"run_after": T0 - dt.timedelta(hours=1)}
    assert status_of(job(), [PAGE], [older])["halted_reason"] == "RUN_NOT_FOUND"  # its run would be listed
    assert status_of(job(), [PAGE], None)["status"] == "in_progress"  # Airflow not asked: nothing to say
    newer = run("manual__2", state="failed") | {"run_after": T0 + dt.timedelta(minutes=5)}
    assert status_of(job(), [PAGE], [newer])["status"] == "in_progress"  # the list may not reach back that far


def test_a_dry_run_never_changes_the_real_status():
    halted_dry = run("manual__dry", state="failed") | {"dry_run": True}
    assert status_of(None, [], [halted_dry]) == {"cid": 7, "status": "not_started"}
    done = job(state="completed_success", validation={"match_pct": 100.0, "found": 995})
    assert "latest_run" not in status_of(done, [PAGE], [halted_dry, run()])


def test_a_rolled_back_job_has_a_state_of_its_own():
    rolled = {"at": T0, "rollback_id": "rb-1", "by": "ops"}
    s = status_of(job(state="completed_success", validation={"match_pct": 100.0, "found": 995}, rolled_back=rolled))
    assert s["status"] == "rolled_back" and "notes_migrated" not in s and "validation" not in s
    assert s["rollback"]["job_status_before"] == "completed_success" and s["rollback"]["by"] == "ops"
    assert s["rollback"]["before"]["notes_migrated"] == 995


def test_progress_never_goes_backwards_whatever_the_pages_cost():
    """Issue 22 item 4: a killed task's page (retried, its timing long) or a first relinked page that costs far
    more or less than a note page must not make the figure fall; the ETA alone reads the measured costs.
    Replays 200 random timelines of an 8-page run (a page's files after its notes, in any interleaving)."""
    import random

    pages_total, per_page = 8, 125
    for seed in range(200):
        rng = random.Random(seed)
        note_costs = [rng.choice([0.1, 2.0, 400.0]) for _ in range(pages_total)]  # 400 s: a killed, retried page
        file_costs = [rng.choice([0.01, 2.0, 60.0]) for _ in range(pages_total)]
        notes_done = files_done = 0
        last = -1.0
        while files_done < pages_total:
            if notes_done < pages_total and (files_done == notes_done or rng.random() < 0.5):
                notes_done += 1
            else:
                files_done += 1
            pages = [{**PAGE, "attempted": per_page, "timings_s": {"total": note_costs[i]}} for i in range(notes_done)]
            attachments = {"pages_done": files_done, "seconds_total": sum(file_costs[:files_done])}
            j = job(notes_total=pages_total * per_page, pages_total=pages_total, attachments=attachments)
            pct = run_progress(j, pages, sum_pages(pages), elapsed_s=60.0)["progress_pct"]
            assert pct >= last, (seed, notes_done, files_done, pct, last)
            last = pct
        assert last == 100.0
