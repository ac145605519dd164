"""Step 2 of a run: the Person→Contact coverage report and its gate (OQ-2).

Shared by the DAG's coverage step and the plugin's coverage route; loads no HTML sanitiser."""

from __future__ import annotations

import logging

from pymongo.database import Database

from notes_migration.domain.codes import (
    RUN_ERROR_OUTCOME,
    Halted,
    Reason,
)
from notes_migration.domain.resolve import resolve_contacts
from notes_migration.run.start import halt_job, load_job
from notes_migration.stores import cdp_store, crm_source, job_store

log = logging.getLogger(__name__)


def resolve_all_persons(crm, db: Database, cid: int, company_sso_id: str, include_activities: bool):
    """In-scope note counts per person and each resolvable person's contact, for the whole CID."""
    per_person = crm_source.notes_per_person(crm, cid, include_activities)
    return per_person, resolve_contacts(per_person, cdp_store.find_contacts(db, company_sso_id, per_person))


def coverage_report(
    crm, db: Database, cid: int, company_sso_id: str, *, include_activities: bool, gate: float, resolved=None
) -> dict:
    """OQ-2: the share of in-scope notes whose person resolves to a CDP contact."""
    per_person, matches = resolved or resolve_all_persons(crm, db, cid, company_sso_id, include_activities)
    notes_total = sum(per_person.values())
    resolvable = sum(n for p, n in per_person.items() if p in matches)
    unmapped = sorted(p for p in per_person if p not in matches)
    share = resolvable / notes_total if notes_total else 1.0
    return {
        "cid": cid,
        "company_sso_id": company_sso_id,
        "notes_in_scope": notes_total,
        "notes_resolvable": resolvable,
        "coverage_pct": round(100.0 * share, 2),
        "persons_total": len(per_person),
        "persons_unmapped": len(unmapped),
        "unmapped_person_ids_sample": unmapped[:20],
        "persons_ambiguous": sum(1 for m in matches.values() if m.ambiguous),
        "contacts_skipped_by_reason": _by_reason(getattr(matches, "malformed", [])),
        "contacts_skipped_sample": getattr(matches, "malformed", [])[:20],
        "gate_pct": round(100.0 * gate, 2),
        "passes_gate": share >= gate,
    }


def _by_reason(entries: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in entries:
        out[e["reason_code"]] = out.get(e["reason_code"], 0) + 1
    return out


def unmapped_person_entries(job: dict, per_person: dict[int, int], mapped) -> list[dict]:
    """A coverage halt's error log: one row per person of `per_person` (in-scope notes per CRM person) that is
    not in `mapped` (the persons the run resolved), with the notes it holds back, in person order (pure)."""
    halted_at = (job.get("halted") or {}).get("at") or job.get("updated_at")
    reason = Reason.COVERAGE_BELOW_GATE
    key = job_store.run_error_key(job["_id"], reason)
    return [
        job_store.note_log_entry(
            job["_id"],
            job["cid"],
            key,
            None,
            RUN_ERROR_OUTCOME,
            reason,
            f"CRM person {person}: {notes} in-scope notes; no contact of company {job['company_sso_id']} "
            f"has crm_data.id {person} or source crm/{person}",
            entry_id=f"{key}:{person}",
            created_at=halted_at,
            crm_person_id=person,
            notes_affected=notes,
        )
        for person, notes in sorted(per_person.items())
        if person not in mapped
    ]


def run_coverage(crm, db: Database, job_id: str) -> dict:
    """The coverage gate; the person → contact answers it computed are kept for the pages (one
    resolution per run, so every page of a run sees the same answer and no page queries contacts)."""
    job, cfg = load_job(db, job_id)
    resolved = resolve_all_persons(crm, db, cfg.cid, cfg.company_sso_id, cfg.include_activities)
    report = coverage_report(
        crm,
        db,
        cfg.cid,
        cfg.company_sso_id,
        include_activities=cfg.include_activities,
        gate=cfg.thresholds.coverage_gate,
        resolved=resolved,
    )
    job_store.save_person_map(db, job_id, {p: m.contact_id for p, m in resolved[1].items()})
    job_store.update_job(db, job_id, coverage=report)
    if not report["passes_gate"]:
        halt_job(db, job, Reason.COVERAGE_BELOW_GATE, coverage=report)
        raise Halted(
            Reason.COVERAGE_BELOW_GATE,
            f"{report['coverage_pct']}% of in-scope notes resolve to a contact, gate {report['gate_pct']}%; "
            f"{report['persons_unmapped']} persons unmapped (e.g. {report['unmapped_person_ids_sample'][:5]})",
        )
    return report
