"""Pure failure accounting and the run verdict (the branch maps this to task ids)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from notes_migration.codes import State


@dataclass(frozen=True)
class Totals:
    rows: int = 0  # Person rows read (notes + activities)
    attempted: int = 0  # in-scope notes the run tried to write
    migrated: int = 0
    already_migrated: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def failure_rate(self) -> float:
        return self.failed / self.attempted if self.attempted else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failure_rate": round(self.failure_rate, 6)}


def sum_pages(pages: Iterable[Mapping[str, Any]]) -> Totals:
    keys = ("rows", "attempted", "migrated", "already_migrated", "skipped", "failed")
    sums = dict.fromkeys(keys, 0)
    for page in pages:
        for key in keys:
            sums[key] += int(page.get(key, 0))
    return Totals(**sums)


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
) -> Verdict:
    """Success is decided by validation, never by reaching the end (a dry run wrote nothing to match)."""
    if halted_reason:
        state = State.HALTED
    elif dry_run:
        state = State.COMPLETED_SUCCESS if failure_rate <= max_failure_rate else State.COMPLETED_WITH_ERRORS
    elif match is not None and match >= min_match_pct and failure_rate <= max_failure_rate and mismatches == 0:
        state = State.COMPLETED_SUCCESS
    else:
        state = State.COMPLETED_WITH_ERRORS
    return Verdict(state, match, round(failure_rate, 6), mismatches, round(attachment_failure_share, 6), halted_reason)
