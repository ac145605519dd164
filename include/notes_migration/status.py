"""The Monitor API (PRD §8), pure: one CID's status JSON from its job, page results and note-log counts
(ops.py reads them)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from notes_migration.accounting import Totals, sum_pages
from notes_migration.codes import Outcome, State
from notes_migration.config import RunConfig
from notes_migration.plain import as_plain, utc_now


def error_log_url(job_id: str, base: str) -> str:
    return f"{base.rstrip('/')}/{job_id}/errors"


def progress_pct(job: Mapping[str, Any], totals: Totals) -> float:
    """Share of the job's in-scope notes processed so far, in percent."""
    notes_total = int(job.get("notes_total") or 0)
    return min(100.0, round(100.0 * totals.attempted / notes_total, 1)) if notes_total else 0.0


def build_status(
    cid: int,
    job: Mapping[str, Any] | None,
    pages: list[Mapping[str, Any]],
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
    scope = job.get("scope") or {}
    out: dict[str, Any] = {
        "cid": cid,
        "status": state.value,
        "job_id": job["_id"],
        "company_sso_id": job["company_sso_id"],
        "dry_run": cfg.dry_run,
    }
    notes_total = int(job.get("notes_total") or 0)
    validation = job.get("validation") or {}
    failed_by_reason = dict(by_outcome.get(Outcome.FAILED.value, {}))
    skipped_by_reason = dict(by_outcome.get(Outcome.SKIPPED.value, {}))
    if scope.get("no_person"):
        skipped_by_reason["NOT_A_PERSON_NOTE"] = scope["no_person"]
    url = error_log_url(job["_id"], cfg.thresholds.error_log_url_base)

    if state == State.IN_PROGRESS:
        processed = totals.attempted
        out.update(
            progress_pct=progress_pct(job, totals),
            notes_processed=processed,
            notes_total=notes_total,
        )
        started = job.get("created_at")
        elapsed = ((now or utc_now()) - started).total_seconds() if started else 0.0
        rate = processed / elapsed if elapsed > 0 else 0.0
        out["throughput_notes_per_s"] = round(rate, 2)
        out["eta_seconds"] = round((notes_total - processed) / rate) if rate > 0 and notes_total >= processed else None
    elif state == State.HALTED:
        halted = job.get("halted") or {}
        rate = halted.get("failure_rate")
        out.update(
            failure_rate=round(totals.failure_rate if rate is None else rate, 6),
            error_log_url=url,
            halted_reason=halted.get("reason"),
        )
        if halted.get("coverage"):
            out["coverage"] = halted["coverage"]
    else:
        out["notes_migrated"] = validation.get("found", totals.migrated + totals.already_migrated)
        out["validation"] = {
            "match_pct": validation.get("match_pct"),
            "content_mismatches": validation.get("content_mismatches", 0),
            "expected": validation.get("expected"),
            "found": validation.get("found"),
        }
        if validation.get("skipped"):
            out["validation"]["skipped"] = validation["skipped"]
        if state == State.COMPLETED_WITH_ERRORS:
            out.update(
                failure_rate=round(totals.failure_rate, 6),
                error_log_url=url,
                mismatch_samples=validation.get("mismatch_samples", []),
            )
    out["counts"] = {
        "notes_total": notes_total,
        "migrated": totals.migrated,
        "already_migrated": totals.already_migrated,
        "out_of_scope": skipped_by_reason,
        "failed": failed_by_reason,
        "checkins_dropped": totals.checkins_dropped,
        "owners_unresolved": totals.owners_unresolved,
        "pages_done": totals.pages_done,
        "pages_total": job.get("pages_total"),
    }
    if job.get("attachments"):
        out["attachments"] = job["attachments"]
    for key in ("created_at", "updated_at", "finished_at"):
        if job.get(key):
            out[key] = as_plain({"v": job[key]})["v"]
    out["triggered_by"] = job.get("triggered_by")
    return out
