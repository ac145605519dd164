"""The dry-run report: what a real run of the CID would do, from its latest dry run (`dry_run: true`).

A dry run reads, resolves, normalises and decides every note like a real run (coverage gate and halt
included), writes no note, copies no file and never changes the CID's status (its job is left out of
the status and the fleet). Its relink step plans instead of copying (attachments.plan_page: source
HEADs and one target LIST per page). This module turns that job's records into the report Ops read
before the real run: counts by outcome and reason, coverage, owners unresolved, files to copy and
their bytes, the verdict validation would reach and an ETA.

ETA (a documented estimate, sequential work, no scheduler overhead): the dry run's own page timings
(read + transform + halt check, measured) + the inserts at the measured raw insert rate + the copy
at the measured relink rate (README *Performance*) + the content check, taken as one more read and
transform of every page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo.database import Database

from notes_migration.domain.accounting import decide_verdict, match_pct, sum_attachment_pages, sum_pages
from notes_migration.domain.codes import State
from notes_migration.domain.config import RunConfig
from notes_migration.domain.plain import plain_value
from notes_migration.domain.status import outcome_counts
from notes_migration.stores import job_store

# Measured rates the ETA extrapolates with (scripts/benchmark.sh, README Performance; this machine's kind).
INSERT_NOTES_PER_S = 6790.0  # bare insert_many of the same documents
COPY_BYTES_PER_S = 14.6e6  # relink, sequential (one task at a time)
COPY_FILES_PER_S = 38.0


def report(
    job: Mapping[str, Any],
    pages: Sequence[Mapping[str, Any]],
    attachment_pages: Sequence[Mapping[str, Any]],
    by_outcome: Mapping[str, Mapping[str, int]],
) -> dict[str, Any]:
    """Pure: the report of one dry-run job (its page results, attachment plans and note-log counts)."""
    cfg = RunConfig.from_dict(job["config"])
    t = cfg.thresholds
    totals = sum_pages(pages)
    notes_total = int(job.get("notes_total") or 0)
    files = _files(attachment_pages, t.attachment_relink_gate)
    halted = (job.get("halted") or {}).get("reason") if job.get("state") == State.HALTED else None
    found = totals.migrated + totals.already_migrated
    predicted = match_pct(notes_total, found) if not halted else None
    verdict = decide_verdict(
        halted_reason=halted,
        match=predicted,
        failure_rate=totals.failure_rate,
        mismatches=0,
        min_match_pct=t.validation_match_pct,
        max_failure_rate=t.max_failure_rate,
        attachment_failure_share=files["failure_share"],
    )
    return {
        "job_id": job["_id"],
        "run_id": job.get("run_id"),
        "company_sso_id": job.get("company_sso_id"),
        "state": job.get("state"),
        "complete": job.get("state") != State.IN_PROGRESS.value,
        "created_at": plain_value(job.get("created_at")),
        "finished_at": plain_value(job.get("finished_at")),
        "triggered_by": job.get("triggered_by"),
        "counts": _would(outcome_counts(job, totals, by_outcome)),
        "failure_rate": round(totals.failure_rate, 6),
        "coverage": job.get("coverage"),
        "attachments": files,
        "predicted_verdict": {
            **verdict.as_dict(),
            "assumes": "no content mismatch; files whose bytes betray another type are not predicted",
        },
        "eta": eta(pages, attachment_pages, totals.migrated, files),
    }


def _would(counts: dict[str, Any]) -> dict[str, Any]:
    """A dry run's counts in its own words: the notes a real run would insert are `would_migrate`."""
    return {("would_migrate" if k == "migrated" else k): v for k, v in counts.items()}


def _files(attachment_pages: Sequence[Mapping[str, Any]], gate: float) -> dict[str, Any]:
    """The attachment plan in a real run's words (accounting.sum_attachment_pages: one sum, one set of rates)."""
    t = sum_attachment_pages(attachment_pages, extra=("bytes_to_copy",))
    sums = t.sums
    return {
        "total": sums["files"],
        "would_relink": sums["relinked"],
        "to_copy": sums["copied"],
        "to_copy_bytes": sums["bytes_to_copy"],
        "already_in_target": sums["reused"],
        "would_fail": sums["failed"],
        "would_fail_by_reason": t.failed_by_reason,
        "skipped": sums["skipped"],
        "skipped_by_reason": t.skipped_by_reason,
        "source_missing": sums["source_missing"],
        "failure_share": t.failure_share,
        "success_rate_where_source_exists": round(t.where_source, 6),
        "gate": gate,
        "pages_planned": t.pages,
    }


def eta(
    pages: Sequence[Mapping[str, Any]],
    attachment_pages: Sequence[Mapping[str, Any]],
    to_insert: int,
    files: Mapping[str, Any],
) -> dict[str, Any]:
    """Seconds of work a real run would take (see the module docstring for the basis)."""
    measured = sum(float((p.get("timings_s") or {}).get("total") or 0.0) for p in pages)
    notes_s = measured + to_insert / INSERT_NOTES_PER_S
    planning_s = sum(float((p.get("timings_s") or {}).get("total") or 0.0) for p in attachment_pages)
    copy_s = max(files["to_copy_bytes"] / COPY_BYTES_PER_S, files["to_copy"] / COPY_FILES_PER_S)
    files_s = planning_s + copy_s
    validate_s = sum(float((p.get("timings_s") or {}).get(k) or 0.0) for p in pages for k in ("read", "transform"))
    rows = sum(int(p.get("rows") or 0) for p in pages)
    return {
        "seconds": round(notes_s + files_s + validate_s),
        "notes_seconds": round(notes_s, 1),
        "attachments_seconds": round(files_s, 1),
        "validation_seconds": round(validate_s, 1),
        "measured_notes_per_s": round(rows / measured, 1) if measured > 0 else None,
        "basis": f"dry-run page timings + inserts at {INSERT_NOTES_PER_S:.0f} notes/s + copies at "
        f"{COPY_BYTES_PER_S / 1e6:.1f} MB/s or {COPY_FILES_PER_S:.0f} files/s + content check",
        "assumes": "pages one after another (a real run overlaps up to 4 note pages and 2 relink pages)",
    }


def latest_report(db: Database, cid: int) -> dict[str, Any] | None:
    """The report of the CID's latest dry run, or None when it has none."""
    job = job_store.latest_dry_run(db, cid)
    if job is None:
        return None
    return report(
        job,
        job_store.page_results(db, job["_id"]),
        job_store.attachment_page_results(db, job["_id"]),
        job_store.counts_by_outcome(db, job["_id"]),
    )


def dry_run_status(db: Database, cid: int) -> dict[str, Any]:
    """`GET /api/status?cid=N&dry_run=true`: the latest dry run's report, apart from the real status."""
    found = latest_report(db, cid)
    if found is None:
        return {"cid": cid, "status": State.NOT_STARTED.value, "dry_run": True, "dry_run_report": None}
    return {"cid": cid, "status": found["state"], "dry_run": True, "job_id": found["job_id"], "dry_run_report": found}
