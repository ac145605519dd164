"""The seven PRD §12 events: persisted per job (and logged as JSON lines) by real runs, with their properties."""

from __future__ import annotations

import json
import logging

from notes_migration.domain.codes import Event
from notes_migration.stores import job_store
from tests.fleet import HALTED, IN_PROGRESS, SUCCESS, WITH_ERRORS


def _events(cdp, cid: int) -> list[dict]:
    job = job_store.latest_job(cdp, cid)
    return job_store.events(cdp, job["_id"], limit=0)


def test_real_runs_record_every_prd_event_with_its_properties(fleet, cdp):
    by_name: dict[str, list[dict]] = {}
    for cid in (IN_PROGRESS, HALTED, SUCCESS, WITH_ERRORS):
        for e in _events(cdp, cid):
            by_name.setdefault(e["event"], []).append(e)
    core = {
        Event.STARTED,
        Event.BATCH_COMPLETED,
        Event.NOTE_FAILED,
        Event.OWNER_NOT_RESOLVED,
        Event.HALTED,
        Event.COMPLETED,
    }
    assert core <= set(by_name)
    expected_props = {
        Event.STARTED: {"company_sso_id", "triggered_by", "config"},
        Event.BATCH_COMPLETED: {
            "page_no",
            "rows",
            "migrated",
            "already_migrated",
            "failed",
            "skipped",
            "owners_unresolved",
            "duration_s",
        },
        Event.NOTE_FAILED: {"legacy_crm_note_id", "reason_code", "details"},
        Event.OWNER_NOT_RESOLVED: {"legacy_crm_note_id", "legacy_owner_label"},
        Event.HALTED: {"reason", "failure_rate"},
        Event.COMPLETED: {"status", "match_pct", "failure_rate", "notes_migrated"},
    }
    for name, props in expected_props.items():
        for e in by_name[name]:
            assert props <= set(e["properties"]), (name, e["properties"])
            assert e["job_id"] and e["cid"] and e["at"]
    assert [e["properties"]["reason"] for e in by_name[Event.HALTED]] == ["FAILURE_RATE_EXCEEDED"]
    # the relink step's event, wherever a file could not be copied
    failed_files = sum(
        (job_store.latest_job(cdp, c).get("attachments") or {}).get("failed", 0)
        for c in (IN_PROGRESS, SUCCESS, WITH_ERRORS)
    )
    assert len(by_name.get(Event.ATTACHMENT_FAILED, [])) == failed_files
    for e in by_name.get(Event.ATTACHMENT_FAILED, []):
        assert {"legacy_crm_note_id", "reason_code"} <= set(e["properties"])


def test_events_are_structured_log_lines(caplog):
    from notes_migration.domain.events import event

    with caplog.at_level(logging.INFO, logger="notes_migration.domain.events"):
        record = event(Event.HALTED, job_id="j", cid=3001, reason="COVERAGE_BELOW_GATE", failure_rate=0.0)
    line = json.loads(caplog.records[-1].getMessage())
    assert line == {
        "event": "crm_notes_migration_halted",
        "job_id": "j",
        "cid": 3001,
        "reason": "COVERAGE_BELOW_GATE",
        "failure_rate": 0.0,
    }
    assert record["_id"] == "j:crm_notes_migration_halted:"


def test_a_notes_owner_not_resolved_logs_at_debug_and_its_batch_counts_it(caplog, fleet, cdp):
    from notes_migration.domain.events import event

    with caplog.at_level(logging.INFO, logger="notes_migration.domain.events"):
        event(Event.OWNER_NOT_RESOLVED, job_id="j", cid=3001, subject=7, legacy_crm_note_id=7)
    assert not caplog.records  # not at INFO: one line per migrated note flooded the task log
    with caplog.at_level(logging.DEBUG, logger="notes_migration.domain.events"):
        record = event(Event.OWNER_NOT_RESOLVED, job_id="j", cid=3001, subject=7, legacy_crm_note_id=7)
    assert json.loads(caplog.records[-1].getMessage())["event"] == Event.OWNER_NOT_RESOLVED.value
    assert record["properties"] == {"legacy_crm_note_id": 7}
    events = _events(cdp, SUCCESS)
    unresolved = sum(1 for e in events if e["event"] == Event.OWNER_NOT_RESOLVED)
    counted = sum(e["properties"]["owners_unresolved"] for e in events if e["event"] == Event.BATCH_COMPLETED)
    assert unresolved == counted > 0
