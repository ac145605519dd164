"""What is checked before a run writes anything: the preconditions and the Person→Contact coverage (OQ-2).

Shared by the DAG's first steps and the plugin's trigger and coverage routes.
Loads no HTML sanitiser: only the CRM reads, the CDP contact lookup and pure
resolution rules.
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo.database import Database

from notes_migration import cdp_store, crm_source, job_store
from notes_migration.codes import RUN_ERROR_OUTCOME, Reason, Refused, State
from notes_migration.config import UUID_RE, RunConfig
from notes_migration.resolve import resolve_contacts


def check_preconditions(crm, db: Database, cfg: RunConfig, *, flag_cids: Iterable[int]) -> None:
    """Every reason to refuse that needs no lock; raises Refused, writes nothing."""
    if cfg.cid not in set(flag_cids):
        raise Refused(Reason.FLAG_DISABLED, f"feature flag is OFF for CID {cfg.cid}")
    # fullmatch: the contract's pattern ends in `$`, which also matches before a trailing newline (Python's re and the
    # JSON-schema check of the DAG's params both let "<uuid>\n" through; the API's pydantic check does not)
    if not UUID_RE.fullmatch(cfg.company_sso_id or ""):
        raise Refused(Reason.INVALID_COMPANY_SSO_ID, f"company_sso_id {cfg.company_sso_id!r} is not a UUID")
    if not crm_source.cid_exists(crm, cfg.cid):
        raise Refused(Reason.CID_NOT_FOUND, f"CID {cfg.cid} is not an organization of the CRM")
    last = job_store.latest_job(db, cfg.cid)
    done = last and last.get("state") == State.COMPLETED_SUCCESS and not last.get("rolled_back")  # rollback.py
    if last is not None and done and not (cfg.force_rerun or cfg.dry_run):
        raise Refused(
            Reason.ALREADY_MIGRATED,
            f"CID {cfg.cid} already completed_success in job {last['_id']}; use force_rerun to run it again",
        )


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
    return [
        {
            "job_id": job["_id"],
            "cid": job["cid"],
            "legacy_crm_note_id": None,
            "crm_person_id": person,
            "notes_affected": notes,
            "outcome": RUN_ERROR_OUTCOME,
            "reason_code": Reason.COVERAGE_BELOW_GATE.value,
            "details": f"CRM person {person}: {notes} in-scope notes; no contact of company {job['company_sso_id']} "
            f"has crm_data.id {person} or source crm/{person}",
            "created_at": halted_at,
        }
        for person, notes in sorted(per_person.items())
        if person not in mapped
    ]
