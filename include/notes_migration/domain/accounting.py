"""Pure failure accounting and the run verdict (the branch maps this to task ids)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from notes_migration.domain.codes import Outcome, State


@dataclass(frozen=True)
class Totals:
    """A job's note counters summed over its page results (FerretDB has no atomic shared counter)."""

    rows: int = 0  # Person rows read (notes + activities)
    attempted: int = 0  # in-scope notes the run tried to write
    migrated: int = 0
    already_migrated: int = 0
    skipped: int = 0
    failed: int = 0
    checkins_dropped: int = 0
    owners_unresolved: int = 0
    pages_done: int = 0

    @property
    def failure_rate(self) -> float:
        return self.failed / self.attempted if self.attempted else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failure_rate": round(self.failure_rate, 6)}


PAGE_COUNTERS = (
    "rows",
    "attempted",
    "migrated",
    "already_migrated",
    "skipped",
    "failed",
    "checkins_dropped",
    "owners_unresolved",
)


def sum_pages(pages: Iterable[Mapping[str, Any]]) -> Totals:
    """The one sum over note page results (status, fleet, halt check and verdict all read it)."""
    sums = dict.fromkeys(PAGE_COUNTERS, 0)
    n = 0
    for page in pages:
        n += 1
        for key in PAGE_COUNTERS:
            sums[key] += int(page.get(key) or 0)
    return Totals(**sums, pages_done=n)


# What a page result counts per note outcome, and the reasons it counts them by (failed and skipped notes).
_OUTCOME_COUNTERS = {
    Outcome.MIGRATED.value: ("migrated", None),
    Outcome.ALREADY_MIGRATED.value: ("already_migrated", None),
    Outcome.FAILED.value: ("failed", "failed_by_reason"),
    Outcome.SKIPPED.value: ("skipped", "skipped_by_reason"),
}


def tally(page: dict[str, Any], outcome: str, reason: str | None = None, n: int = 1) -> None:
    """Count `n` notes (negative: uncount) of one outcome, and its reason, on a page result, in place.

    The one rule for a page's counters: the batch counts its decisions with it and a failed-record retry
    moves a note from one outcome to another with it. A skipped note is not attempted (it leaves the
    failure rate's denominator); a reason whose count falls to zero leaves its `*_by_reason` map."""
    counter, by_key = _OUTCOME_COUNTERS[str(outcome)]
    page[counter] = int(page.get(counter) or 0) + n
    if by_key is not None and reason is not None:
        by = dict(page.get(by_key) or {})
        by[str(reason)] = int(by.get(str(reason)) or 0) + n
        page[by_key] = {k: v for k, v in by.items() if v > 0}
    if outcome == Outcome.SKIPPED:
        page["attempted"] = int(page.get("attempted") or 0) - n


def should_halt(totals: Totals, *, batch_size: int, notes_total: int, max_failure_rate: float) -> bool:
    """Halt once the hard-failure share exceeds the threshold, judged after at least one full batch."""
    enough = totals.attempted >= min(batch_size, max(notes_total, 1))
    return enough and totals.failure_rate > max_failure_rate


def match_pct(expected: int, found: int) -> float:
    return 100.0 if expected == 0 else round(100.0 * min(found, expected) / expected, 2)


@dataclass(frozen=True)
class Verdict:
    state: State
    match_pct: float | None
    failure_rate: float
    content_mismatches: int
    attachment_failure_share: float = 0.0
    halted_reason: str | None = None
    validation_skipped: str | None = None  # VALIDATION_SKIPPED: the count source was unavailable (PRD §9 #8)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state.value}


def decide_verdict(
    *,
    halted_reason: str | None,
    match: float | None,
    failure_rate: float,
    mismatches: int,
    min_match_pct: float,
    max_failure_rate: float,
    attachment_failure_share: float = 0.0,
    dry_run: bool = False,
    validation_skipped: str | None = None,
) -> Verdict:
    """Success is decided by validation, never by reaching the end (a dry run wrote nothing to match;
    a validation that could not count proves nothing: completed_with_errors)."""
    if halted_reason:
        state = State.HALTED
    elif validation_skipped:
        state = State.COMPLETED_WITH_ERRORS
    elif dry_run:
        state = State.COMPLETED_SUCCESS if failure_rate <= max_failure_rate else State.COMPLETED_WITH_ERRORS
    elif match is not None and match >= min_match_pct and failure_rate <= max_failure_rate and mismatches == 0:
        state = State.COMPLETED_SUCCESS
    else:
        state = State.COMPLETED_WITH_ERRORS
    return Verdict(
        state,
        match,
        round(failure_rate, 6),
        mismatches,
        round(attachment_failure_share, 6),
        halted_reason,
        validation_skipped if not halted_reason else None,
    )


# --------------------------------------------------------------------------- attachment figures


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (P95 of per-file times)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


ATTACHMENT_COUNTERS = (
    "files",
    "relinked",
    "copied",
    "reused",
    "bytes_copied",
    "failed",
    "skipped",
    "source_missing",
    "content_type_corrected",
    "notes_with_files",
    "notes_updated",
)


@dataclass(frozen=True)
class FileTotals:
    """A job's attachment counters summed over its attachment page results (real or planned by a dry run)."""

    sums: dict[str, int]
    failed_by_reason: dict[str, int]
    skipped_by_reason: dict[str, int]
    file_ms: list[int]
    pages: int
    seconds: float

    @property
    def tried(self) -> int:
        """Files the step tried to relink: allowlisted and under the cap."""
        return self.sums["files"] - self.sums["skipped"]

    @property
    def where_source(self) -> float:
        """Relinked share of the tried files whose source object exists (the Stage-1 gate reads it)."""
        with_source = self.tried - self.sums["source_missing"]
        return self.sums["relinked"] / with_source if with_source else 1.0

    @property
    def failure_share(self) -> float:
        return round(self.sums["failed"] / self.tried, 6) if self.tried else 0.0

    @property
    def success_rate(self) -> float:
        return round(self.sums["relinked"] / self.tried, 6) if self.tried else 1.0


def sum_attachment_pages(pages: Iterable[Mapping[str, Any]], extra: Sequence[str] = ()) -> FileTotals:
    """The one sum over attachment page results (ATTACHMENT_COUNTERS, plus the `extra` counters asked for)."""
    keys = (*ATTACHMENT_COUNTERS, *extra)
    sums: dict[str, int] = dict.fromkeys(keys, 0)
    failed_by: Counter[str] = Counter()
    skipped_by: Counter[str] = Counter()
    ms: list[int] = []
    n_pages = 0
    seconds = 0.0
    for page in pages:
        n_pages += 1
        for k in keys:
            sums[k] += int(page.get(k) or 0)
        failed_by.update(page.get("failed_by_reason") or {})
        skipped_by.update(page.get("skipped_by_reason") or {})
        ms.extend(page.get("file_ms") or [])
        seconds += float((page.get("timings_s") or {}).get("total") or 0.0)
    return FileTotals(sums, dict(failed_by), dict(skipped_by), ms, n_pages, seconds)


def attachment_figures(
    pages: Iterable[Mapping[str, Any]], *, gate: float, pages_total: int | None = None
) -> dict[str, Any]:
    """Pure: the job's attachment figures summed over its page results (the status and the alert read them).

    success_rate = relinked / files tried (allowlisted, under the cap); the Stage-1 gate reads
    success_rate_where_source_exists, which leaves out files whose source object is missing;
    failure_share = failed / files tried (> attachment_alert_share → Slack)."""
    t = sum_attachment_pages(pages)
    sums = t.sums
    p95 = percentile(t.file_ms, 95)
    return {
        "total": sums["files"],
        "relinked": sums["relinked"],
        "copied": sums["copied"],
        "reused": sums["reused"],
        "failed": sums["failed"],
        "failed_by_reason": t.failed_by_reason,
        "skipped": sums["skipped"],
        "skipped_by_reason": t.skipped_by_reason,
        "source_missing": sums["source_missing"],
        "content_type_corrected": sums["content_type_corrected"],
        "bytes_copied": sums["bytes_copied"],
        "notes_with_files": sums["notes_with_files"],
        "notes_updated": sums["notes_updated"],
        "success_rate": t.success_rate,
        "success_rate_where_source_exists": round(t.where_source, 6),
        "failure_share": t.failure_share,
        "gate": gate,
        "gate_met": t.where_source >= gate,
        "p95_file_seconds": round(p95 / 1000, 3) if p95 is not None else None,
        "pages_done": t.pages,
        "pages_total": pages_total,
        "seconds_total": round(t.seconds, 3),
    }
