"""The Monitor API (PRD §8), pure: one CID's status JSON from its job, page results and note-log counts
(ops.py reads them)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from notes_migration.domain.accounting import Totals, sum_pages
from notes_migration.domain.codes import ERROR_OUTCOMES, OUT_OF_SCOPE_REASONS, Outcome, Reason, State
from notes_migration.domain.config import RunConfig
from notes_migration.domain.plain import plain_value, utc_now


def error_log_url(job_id: str, base: str) -> str:
    return f"{base.rstrip('/')}/{job_id}/errors"


def anything_failed(job: Mapping[str, Any], by_outcome: Mapping[str, Mapping[str, int]]) -> bool:
    """Whether the job's error log has a row to act on: a failed note or file, or a run-level error."""
    if any(sum((by_outcome.get(o) or {}).values()) for o in ERROR_OUTCOMES):
        return True
    attachments = job.get("attachments") or {}
    return bool(attachments.get("failed"))


def skips_by_reason(
    by_outcome: Mapping[str, Mapping[str, int]], scope: Mapping[str, Any]
) -> tuple[dict[str, int], dict[str, int]]:
    """The skipped notes by reason, split into the CID's scope (out of scope: not a person's note, an
    activity left out, a check-in dropped) and the notes a halt held back (under the halt's reason)."""
    skipped = dict(by_outcome.get(Outcome.SKIPPED.value, {}))
    if scope.get("no_person"):
        skipped[Reason.NOT_A_PERSON_NOTE.value] = scope["no_person"]
    out_of_scope = {r: n for r, n in skipped.items() if r in OUT_OF_SCOPE_REASONS}
    return out_of_scope, {r: n for r, n in skipped.items() if r not in out_of_scope}


def progress_pct(job: Mapping[str, Any], totals: Totals) -> float:
    """Share of the job's in-scope notes processed so far, in percent."""
    notes_total = int(job.get("notes_total") or 0)
    return min(100.0, round(100.0 * totals.attempted / notes_total, 1)) if notes_total else 0.0


# Phases of an in-progress run, in order (the status says which one the run is in).
PHASE_PREFLIGHT, PHASE_NOTES, PHASE_ATTACHMENTS, PHASE_VALIDATING = (
    "preflight",  # coverage and page planning: nothing to count yet
    "migrating_notes",
    "relinking_attachments",
    "validating",
)


def run_progress(
    job: Mapping[str, Any], pages: Sequence[Mapping[str, Any]], totals: Totals, elapsed_s: float
) -> dict[str, Any]:
    """Progress over the whole run, notes and attachments, that never goes backwards.

    `progress_pct` gives the two phases fixed, equal weights (no attachment phase on a dry run): the
    share of in-scope notes processed and the share of pages whose files are relinked only grow, so
    the figure only grows (a killed task's page, retried, keeps what its batches recorded). Weights
    measured during the run would be closer to time but move as pages are timed, and the figure can then
    fall (it did before 2026-12-06: issue 22 saw 32.6 % → 13.8 % on a 100,000-note CID after a killed
    task; the unit test replays such falls). Measured seconds per page serve the ETA only, which may move
    either way: it extrapolates the elapsed time over the share of the work still to do, each phase
    weighted by its mean seconds per page so far (the note phase's until the first attachment page is
    done)."""
    pages_total = int(job.get("pages_total") or 0)
    notes_share = progress_pct(job, totals) / 100.0
    attachments = job.get("attachments") or {}
    files_pages = int(attachments.get("pages_done") or 0)
    files_share = min(1.0, files_pages / pages_total) if pages_total else 0.0
    dry_run = bool((job.get("config") or {}).get("dry_run"))
    shown = notes_share if dry_run or not pages_total else (notes_share + files_share) / 2  # no pages: no files
    note_seconds = [float((p.get("timings_s") or {}).get("total") or 0.0) for p in pages]
    note_cost = (sum(note_seconds) / len(note_seconds)) if note_seconds else 1.0
    if dry_run:
        file_cost = 0.0
    elif files_pages:
        file_cost = float(attachments.get("seconds_total") or 0.0) / files_pages
    else:
        file_cost = note_cost
    weight = note_cost + file_cost
    timed = (note_cost * notes_share + file_cost * files_share) / weight if weight > 0 else notes_share
    if not pages_total and "pages_total" not in job:
        phase = PHASE_PREFLIGHT
    elif pages_total and totals.pages_done < pages_total:
        phase = PHASE_NOTES
    elif not dry_run and pages_total and files_pages < pages_total:
        phase = PHASE_ATTACHMENTS
    else:
        phase = PHASE_VALIDATING
    eta = round(elapsed_s * (1 - timed) / timed) if 0 < timed and elapsed_s > 0 else None
    return {"phase": phase, "progress_pct": min(100.0, round(100.0 * shown, 1)), "eta_seconds": eta}


def build_status(
    cid: int,
    job: Mapping[str, Any] | None,
    pages: Sequence[Mapping[str, Any]],
    by_outcome: Mapping[str, Mapping[str, int]],
    *,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Pure: the PRD §8 shape for the job's state, plus the counts behind it."""
    if job is None:
        return {"cid": cid, "status": State.NOT_STARTED.value}
    cfg = RunConfig.from_dict(job["config"])
    state = State(job["state"])
    totals = sum_pages(pages)
    out: dict[str, Any] = {
        "cid": cid,
        "status": state.value,
        "job_id": job["_id"],
        "company_sso_id": job["company_sso_id"],
        "dry_run": cfg.dry_run,
    }
    url = error_log_url(job["_id"], cfg.thresholds.error_log_url_base)
    if state == State.IN_PROGRESS:
        out.update(_in_progress(job, pages, totals, now or utc_now()))
    elif state == State.HALTED:
        out.update(_halted(job, totals, url))
    else:
        out.update(_finished(job, state, totals, url))
    if "error_log_url" not in out and anything_failed(job, by_outcome):
        out["error_log_url"] = url  # whatever the state: a success with failed files still has rows to act on
    out["counts"] = outcome_counts(job, totals, by_outcome)
    if job.get("attachments"):
        out["attachments"] = job["attachments"]
    for key in ("created_at", "updated_at", "finished_at"):
        if job.get(key):
            out[key] = plain_value(job[key])
    out["triggered_by"] = job.get("triggered_by")
    if job.get("rolled_back") and not cfg.dry_run:
        _as_rolled_back(out, job["rolled_back"])
    return out


def _in_progress(
    job: Mapping[str, Any], pages: Sequence[Mapping[str, Any]], totals: Totals, now: dt.datetime
) -> dict[str, Any]:
    processed = totals.attempted
    started = job.get("created_at")
    elapsed = (now - started).total_seconds() if started else 0.0
    return {
        **run_progress(job, pages, totals, elapsed),
        "notes_processed": processed,
        "notes_total": int(job.get("notes_total") or 0),
        "throughput_notes_per_s": round(processed / elapsed, 2) if elapsed > 0 else 0.0,
    }


def _halted(job: Mapping[str, Any], totals: Totals, url: str) -> dict[str, Any]:
    halted = job.get("halted") or {}
    rate = halted.get("failure_rate")
    out = {
        "failure_rate": round(totals.failure_rate if rate is None else rate, 6),
        "error_log_url": url,
        "halted_reason": halted.get("reason"),
    }
    if halted.get("coverage"):
        out["coverage"] = halted["coverage"]
    return out


def _finished(job: Mapping[str, Any], state: State, totals: Totals, url: str) -> dict[str, Any]:
    """completed_success / completed_with_errors: what validation found (the verdict's evidence)."""
    validation = job.get("validation") or {}
    out: dict[str, Any] = {
        "notes_migrated": validation.get("found", totals.migrated + totals.already_migrated),
        "validation": {
            "match_pct": validation.get("match_pct"),
            "content_mismatches": validation.get("content_mismatches", 0),
            "expected": validation.get("expected"),
            "found": validation.get("found"),
        },
    }
    if validation.get("skipped"):
        out["validation"]["skipped"] = validation["skipped"]
    for key in ("read", "content_found"):  # the writer's path: where the count and the content were read
        if key in validation:
            out["validation"][key] = validation[key]
    if state == State.COMPLETED_WITH_ERRORS:
        out.update(
            failure_rate=round(totals.failure_rate, 6),
            error_log_url=url,
            mismatch_samples=validation.get("mismatch_samples", []),
        )
    return out


def outcome_counts(
    job: Mapping[str, Any], totals: Totals, by_outcome: Mapping[str, Mapping[str, int]]
) -> dict[str, Any]:
    """The counts by outcome and reason a job's status (and a dry run's report) show."""
    out_of_scope, withheld = skips_by_reason(by_outcome, job.get("scope") or {})
    return {
        "notes_total": int(job.get("notes_total") or 0),
        "migrated": totals.migrated,
        "already_migrated": totals.already_migrated,
        "out_of_scope": out_of_scope,
        "withheld_by_halt": withheld,
        "failed": dict(by_outcome.get(Outcome.FAILED.value, {})),
        "checkins_dropped": totals.checkins_dropped,
        "owners_unresolved": totals.owners_unresolved,
        "contacts_skipped": (job.get("coverage") or {}).get("contacts_skipped_by_reason") or {},
        "pages_done": totals.pages_done,
        "pages_total": job.get("pages_total"),
    }


def _as_rolled_back(out: dict[str, Any], rolled_back: Mapping[str, Any]) -> None:
    """A rolled-back CID has a state of its own: what the job ended as, and its figures, move under `rollback`
    (the notes they count are no longer in CDP); who, when and the rollback's id (queries add its counts)."""
    before = {k: out.pop(k) for k in ("notes_migrated", "validation", "failure_rate", "mismatch_samples") if k in out}
    out["rollback"] = {
        "rollback_id": rolled_back.get("rollback_id"),
        "by": rolled_back.get("by"),
        "at": plain_value(rolled_back.get("at")),
        "job_status_before": out["status"],
        "before": before,
    }
    out["status"] = State.ROLLED_BACK.value


DEAD_RUN_STATES = frozenset({"failed", "success"})  # Airflow is done with the run, whatever the job says


def with_airflow_runs(
    status: dict[str, Any], job: Mapping[str, Any] | None, runs: Sequence[Mapping[str, Any]] | None
) -> dict[str, Any]:
    """The status corrected by what Airflow knows of the CID's DAG runs (newest first), so a poller
    never waits on a run that is dead: a job still in_progress whose run Airflow has finished, or a
    failed run that recorded no job at all, is reported `halted` with reason RUN_FAILED, the run's
    id and state and its failed tasks. A newer run that recorded no job is shown beside the job."""
    if runs is None:
        return status  # Airflow was not asked
    runs = [r for r in runs if not r.get("dry_run")]  # a dry run never changes the CID's real status
    out = dict(status)
    job_run = next((r for r in runs if job and r["run_id"] == job.get("run_id")), None)
    if job is not None and status["status"] == State.IN_PROGRESS:
        url = error_log_url(job["_id"], RunConfig.from_dict(job["config"]).thresholds.error_log_url_base)
        if job_run and job_run["state"] in DEAD_RUN_STATES:
            return _run_failed(out, job_run, url=url)
        if job_run is None and _run_gone(job, runs):
            gone: dict[str, Any] = {"run_id": job.get("run_id"), "state": "not_found", "failed_tasks": []}
            return _run_failed(out, gone, url=url, reason=Reason.RUN_NOT_FOUND)
        if job_run and job_run.get("retrying_tasks"):
            out["waiting_for"] = _waiting_for(job_run["retrying_tasks"])
    if not runs:
        return out
    newest = runs[0]
    if newest is not job_run:
        if job is None and newest["state"] == "failed":
            return _run_failed(out, newest, url=None)
        out["latest_run"] = _run_info(newest)
    return out


def _waiting_for(retrying: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What an in-progress run waits for while Airflow retries a task (a killed task process is seen dead
    after the scheduler's heartbeat timeout, then retried): its counts stand still meanwhile, they do not go back."""
    since = min((plain_value(t["since"]) for t in retrying if t.get("since")), default=None)
    tasks = [str(t["task"]) for t in retrying]
    return {
        "what": "task_retry",
        "tasks": sorted(tasks),
        "since": since,
        "detail": f"Airflow retries {_summarise_tasks(tasks)} (failed try"
        + f" {max(int(t.get('failed_try') or 0) for t in retrying)}"
        + (f", since {since})" if since else ")"),
    }


def _run_info(run: Mapping[str, Any]) -> dict[str, Any]:
    info = {k: run.get(k) for k in ("run_id", "state", "failed_tasks")}
    for key in ("start_date", "end_date"):
        if run.get(key):
            info[key] = plain_value(run[key])
    return info


def _summarise_tasks(task_ids: Sequence[str]) -> str:
    """`preconditions`, or `migrate_page ×76 (e.g. migrate_page[3])` for mapped tasks: a readable line."""
    groups: dict[str, list[str]] = {}
    for task in task_ids:
        groups.setdefault(task.split("[", 1)[0], []).append(task)
    return ", ".join(
        name if len(items) == 1 and items[0] == name else f"{name} ×{len(items)} (e.g. {items[0]})"
        for name, items in groups.items()
    )


def _run_gone(job: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> bool:
    """Airflow no longer has the job's run (deleted, or another Airflow's): the runs listed (newest first) reach
    back to the job's creation, so its run would be among them."""
    if not runs:
        return True
    oldest = runs[-1].get("run_after") or runs[-1].get("start_date")
    created = job.get("created_at")
    if oldest is None or created is None:
        return False
    as_utc = lambda t: t if t.tzinfo else t.replace(tzinfo=dt.UTC)  # noqa: E731
    return as_utc(oldest) <= as_utc(created)


def _run_failed(
    out: dict[str, Any], run: Mapping[str, Any], *, url: str | None, reason: Reason = Reason.RUN_FAILED
) -> dict[str, Any]:
    for key in ("progress_pct", "eta_seconds", "phase", "notes_processed", "throughput_notes_per_s"):
        out.pop(key, None)
    failed = run.get("failed_tasks") or []
    state = "deleted or unknown to this Airflow" if run["state"] == "not_found" else run["state"]
    out.update(
        status=State.HALTED.value,
        halted_reason=reason.value,
        airflow_run=_run_info(run),
        detail=f"Airflow run {run['run_id']} is {state}"
        + (f" (failed: {_summarise_tasks(failed)})" if failed else "")
        + (" before the job finished" if "job_id" in out else " before it recorded a job"),
    )
    if url:
        out["error_log_url"] = url
    counts = out.get("counts") or {}
    failed_n = sum((counts.get("failed") or {}).values())
    attempted = int(counts.get("migrated") or 0) + int(counts.get("already_migrated") or 0) + failed_n
    out.setdefault("failure_rate", round(Totals(attempted=attempted, failed=failed_n).failure_rate, 6))
    return out
