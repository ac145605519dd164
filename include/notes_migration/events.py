"""PRD §12 events: one structured log line each, and a record for the events collection.

Record ids are deterministic (job, event, subject), so a retried task rewrites
its events instead of duplicating them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from notes_migration.codes import Event

log = logging.getLogger("notes_migration.events")


def event(name: Event, *, job_id: str, cid: int, subject: str | int = "", **props: Any) -> dict[str, Any]:
    """Log the event as one JSON line and return its persisted form."""
    at = dt.datetime.now(dt.UTC)
    record = {
        "_id": f"{job_id}:{name.value}:{subject}",
        "event": name.value,
        "job_id": job_id,
        "cid": cid,
        "at": at,
        "properties": props,
    }
    log.info(json.dumps({"event": name.value, "job_id": job_id, "cid": cid, **props}, default=str, sort_keys=True))
    return record
