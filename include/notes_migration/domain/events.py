"""PRD §12 events: one structured log line each, and a record for the events collection.

A note's owner_not_resolved (the note is migrated, with a readable author label) logs at DEBUG, and its
batch's batch_completed line counts them (`owners_unresolved`): at INFO, thousands of identical lines per
task page of a large CID make its task log unreadable and its run slower under the scheduler.

Record ids are deterministic (job, event, subject), so a retried task rewrites
its events instead of duplicating them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from notes_migration.domain.codes import Event

log = logging.getLogger("notes_migration.domain.events")


QUIET = {Event.OWNER_NOT_RESOLVED}  # per-note, not a failure: DEBUG lines, counted by batch_completed


def event(name: Event, *, job_id: str, cid: int, subject: str | int = "", **props: Any) -> dict[str, Any]:
    """Log the event as one JSON line (DEBUG for the QUIET ones, else INFO) and return its persisted form."""
    at = dt.datetime.now(dt.UTC)
    record = {
        "_id": f"{job_id}:{name.value}:{subject}",
        "event": name.value,
        "job_id": job_id,
        "cid": cid,
        "at": at,
        "properties": props,
    }
    line = json.dumps({"event": name.value, "job_id": job_id, "cid": cid, **props}, default=str, sort_keys=True)
    log.log(logging.DEBUG if name in QUIET else logging.INFO, line)
    return record
