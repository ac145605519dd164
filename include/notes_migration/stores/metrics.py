"""Airflow metrics (StatsD / OpenTelemetry through Airflow's Stats) of the migration.

Names are fixed here, once: dashboards and alert rules depend on them. Every
metric carries the CID as a tag (kept out of the name, so a fleet of ~130 CIDs
does not explode the metric namespace). Emitting a metric never fails a task:
a broken metrics backend is logged and ignored.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "crm_notes_migration"
NOTES_MIGRATED = f"{PREFIX}.notes_migrated"
NOTES_ALREADY_MIGRATED = f"{PREFIX}.notes_already_migrated"
NOTES_SKIPPED = f"{PREFIX}.notes_skipped"
NOTES_FAILED = f"{PREFIX}.notes_failed"
OWNERS_UNRESOLVED = f"{PREFIX}.owners_unresolved"
ATTACHMENTS_FAILED = f"{PREFIX}.attachments_failed"
ATTACHMENTS_RELINKED = f"{PREFIX}.attachments_relinked"
RELINK_DURATION = f"{PREFIX}.relink_duration"  # timer, one per page
BATCH_DURATION = f"{PREFIX}.batch_duration"  # timer, one per page; phases as .read/.transform/.write
RUNS_STARTED = f"{PREFIX}.runs_started"
RUNS_HALTED = f"{PREFIX}.runs_halted"
RUNS_FINISHED = f"{PREFIX}.runs_finished"  # tagged with the final state
ALERTS_SENT = f"{PREFIX}.alerts_sent"
ALERTS_UNDELIVERED = f"{PREFIX}.alerts_undelivered"


def _stats() -> Any:
    """Airflow's Stats facade (the SDK one: it is what task processes configure)."""
    from airflow.sdk.observability import stats

    return stats


def _tags(cid: int | None, **extra: Any) -> dict[str, str]:
    tags = {"dag_id": PREFIX}
    if cid is not None:
        tags["cid"] = str(cid)
    tags.update({k: str(v) for k, v in extra.items() if v is not None})
    return tags


def _incr(name: str, count: int, tags: dict[str, str]) -> None:
    if count <= 0:
        return
    try:
        _stats().incr(name, count, tags=tags)
    except Exception:  # metrics are best effort; they must never change a run's outcome
        log.warning("could not emit metric %s", name, exc_info=True)


def _timing(name: str, seconds: float, tags: dict[str, str]) -> None:
    try:
        _stats().timing(name, dt.timedelta(seconds=max(seconds, 0.0)), tags=tags)
    except Exception:
        log.warning("could not emit metric %s", name, exc_info=True)


def page_completed(page_result: Mapping[str, Any]) -> None:
    """Counters and timers of one migrated page (called once per page attempt)."""
    cid = page_result.get("cid")
    tags = _tags(cid)
    _incr(NOTES_MIGRATED, int(page_result.get("migrated", 0)), tags)
    _incr(NOTES_ALREADY_MIGRATED, int(page_result.get("already_migrated", 0)), tags)
    _incr(OWNERS_UNRESOLVED, int(page_result.get("owners_unresolved", 0)), tags)
    for reason, n in (page_result.get("failed_by_reason") or {}).items():
        _incr(NOTES_FAILED, int(n), _tags(cid, reason_code=reason))
    for reason, n in (page_result.get("skipped_by_reason") or {}).items():
        _incr(NOTES_SKIPPED, int(n), _tags(cid, reason_code=reason))
    timings = page_result.get("timings_s") or {}
    if "total" in timings:
        _timing(BATCH_DURATION, float(timings["total"]), tags)
    for phase in ("read", "transform", "write"):
        if phase in timings:
            _timing(f"{BATCH_DURATION}.{phase}", float(timings[phase]), tags)


def attachments_failed(cid: int, reason_code: str, count: int = 1) -> None:
    """Attachment files that could not be relinked (the relink step calls this)."""
    _incr(ATTACHMENTS_FAILED, count, _tags(cid, reason_code=reason_code))


def run_started(cid: int) -> None:
    _incr(RUNS_STARTED, 1, _tags(cid))


def run_halted(cid: int, reason_code: str) -> None:
    _incr(RUNS_HALTED, 1, _tags(cid, reason_code=reason_code))


def run_finished(cid: int, state: str) -> None:
    _incr(RUNS_FINISHED, 1, _tags(cid, state=state))


def alert(channel: str, kind: str, *, delivered: bool, cid: int | None = None) -> None:
    _incr(ALERTS_SENT if delivered else ALERTS_UNDELIVERED, 1, _tags(cid, channel=channel, kind=kind))


def attachment_page_completed(page_result: Mapping[str, Any]) -> None:
    """Counters and timer of one page's attachment relink (called by the relink step once per page attempt)."""
    cid = int(page_result["cid"])
    tags = _tags(cid)
    _incr(ATTACHMENTS_RELINKED, int(page_result.get("relinked", 0)), tags)
    for reason, n in (page_result.get("failed_by_reason") or {}).items():
        attachments_failed(cid, reason, int(n))
    timings = page_result.get("timings_s") or {}
    if "total" in timings:
        _timing(RELINK_DURATION, float(timings["total"]), tags)
