"""Step 3 of a run: the insert batches of a CID (keyset ranges) packed into task slices for the mapped tasks."""

from __future__ import annotations

import logging
import math
from typing import Any

from pymongo.database import Database

from notes_migration.domain.config import (
    MAX_TASK_BATCHES,
    MAX_TASK_PAGES,
    TARGET_TASK_PAGES,
)
from notes_migration.domain.rows import Page
from notes_migration.run.start import load_job
from notes_migration.stores import crm_source, job_store

log = logging.getLogger(__name__)

WHOLE_CID = "whole_cid"  # a task page that is the whole CID: its migrate task relinks its files too


def batches_per_task(n: int, max_pages: int = MAX_TASK_PAGES) -> int:
    """k, the insert batches of one task page: 1 up to TARGET_TASK_PAGES batches, then about
    TARGET_TASK_PAGES tasks of ≤ MAX_TASK_BATCHES batches, and never more than max_pages tasks."""
    if n <= TARGET_TASK_PAGES:
        return 1
    return max(math.ceil(n / max(1, max_pages)), min(MAX_TASK_BATCHES, math.ceil(n / TARGET_TASK_PAGES)))


def group_batches(batches: list[Page], max_pages: int = MAX_TASK_PAGES) -> list[dict]:
    """Consecutive keyset batches packed into task pages of k = batches_per_task batches. A task page's
    page_no is its first batch's; a one-batch page is the batch's four ints, a larger one also lists its
    batches (four ints each: descriptors stay small). A CID of one task page (most of a fleet: one batch)
    has it marked `whole_cid`: its migrate task also relinks its files (one task fewer per run). Pure."""
    k = batches_per_task(len(batches), max_pages)
    out = []
    for i in range(0, len(batches), k):
        group = batches[i : i + k]
        page: dict[str, Any] = {**group[0].as_dict(), "hi_id": group[-1].hi_id, "size": sum(b.size for b in group)}
        if len(group) > 1:
            page["batches"] = [b.packed() for b in group]
        out.append(page)
    if len(out) == 1:
        out[0][WHOLE_CID] = 1
    return out


def plan(crm, db: Database, job_id: str, max_pages: int = MAX_TASK_PAGES) -> list[dict]:
    _, cfg = load_job(db, job_id)
    batches = crm_source.plan_pages(crm, cfg.cid, cfg.batch_size)
    pages = group_batches(batches, max_pages)
    scope = crm_source.scope_counts(crm, cfg.cid)
    notes_total = scope["person_notes"] + (scope["person_activities"] if cfg.include_activities else 0)
    job_store.update_job(
        db,
        job_id,
        scope=scope,
        notes_total=notes_total,
        pages_total=len(batches),  # the accounting pages: one result per batch, whatever task ran it
        batches_total=len(batches),
        task_pages_total=len(pages),
        rows_total=sum(b.size for b in batches),
    )
    log.info(
        "CID %s: %d task pages of %d batches of ≤ %d rows, %d in-scope notes, scope %s",
        cfg.cid,
        len(pages),
        len(batches),
        cfg.batch_size,
        notes_total,
        scope,
    )
    return pages
