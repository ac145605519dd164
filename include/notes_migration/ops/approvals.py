"""CSM approval of a CID in a Stage 2/3 rollout (PRD §14/§15): what an answer means, the record kept of it,
and what the request shows.

The request itself is an Airflow human-in-the-loop task (`tasks.rollout_operators.CidApprovalOperator`:
Approve / Reject with `window_start`, `window_end`, `reference`), answered in the UI's Required Actions or
through `PATCH /api/v2/…/hitlDetails`; this module keeps no approval state of its own beyond the record of
that answer (`crm_migration_approvals`, one per rollout and CID, written by its approval task only, never
purged), which the lanes, the report and the status JSON (`approval`) read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from notes_migration.domain.codes import ApprovalState

APPROVE, REJECT = "Approve", "Reject"  # the options of the request (ApprovalOperator's)
APPROVAL_FIELDS = ("window_start", "window_end", "reference")  # the request's form fields
APPROVAL_GRACE = dt.timedelta(minutes=5)  # a request still unresolved this long after its timeout: expired


def approval_id(rollout_id: str, cid: int) -> str:
    return f"{rollout_id}:{cid}"


def parse_utc(value: Any) -> dt.datetime:
    """An ISO-8601 instant given in UTC (`Z`, `+00:00`, or naive read as UTC); ValueError otherwise."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    else:
        raise ValueError(f"not an ISO-8601 instant: {value!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    if moment.utcoffset() != dt.timedelta(0):
        raise ValueError(f"{value!r} is not UTC: give the window in UTC (…Z)")
    return moment.astimezone(dt.UTC)


def approval_decision(
    chosen: Sequence[str], fields: Mapping[str, Any], by: Mapping[str, Any] | None, at: dt.datetime | None
) -> dict[str, Any]:
    """What one answer to a CID's request means: approved with a window, rejected, or invalid (Approve
    without a usable window: the CID is not launched, APPROVAL_INVALID, and the detail says why)."""
    out: dict[str, Any] = {
        "chosen": list(chosen),
        "by": dict(by) if by else None,
        "at": at,
        "reference": (fields.get("reference") or None),
        "window_start": None,
        "window_end": None,
        "detail": None,
    }
    if list(chosen) != [APPROVE]:
        return {**out, "state": ApprovalState.REJECTED.value}
    try:
        start, end = parse_utc(fields.get("window_start")), parse_utc(fields.get("window_end"))
    except ValueError as exc:
        return {**out, "state": ApprovalState.INVALID.value, "detail": f"window: {exc}"}
    if end <= start:
        return {**out, "state": ApprovalState.INVALID.value, "detail": "window_end is not after window_start"}
    return {**out, "state": ApprovalState.APPROVED.value, "window_start": start, "window_end": end}


def approval_view(doc: Mapping[str, Any] | None) -> dict[str, Any]:
    """A CID's approval as the report, the status JSON and the Ops view show it (pending when none recorded)."""
    if not doc:
        return {"state": ApprovalState.PENDING.value}
    keys = ("state", "by", "at", "window_start", "window_end", "reference", "detail", "requested_at", "timeout_at")
    out = {k: doc.get(k) for k in keys if doc.get(k) is not None}
    for k in ("rollout_id", "stage", "required_actions_url", "job_id"):
        if doc.get(k):
            out[k] = doc[k]
    return out


def save_approval(db: Any, doc: Mapping[str, Any]) -> None:
    """The approval record of one CID in one rollout (written by its approval task only: one writer)."""
    from notes_migration.domain import config as C

    db[C.APPROVALS].replace_one({"_id": doc["_id"]}, dict(doc), upsert=True)


def approvals_of(db: Any, rollout_id: str) -> dict[int, dict[str, Any]]:
    from notes_migration.domain import config as C

    return {d["cid"]: d for d in db[C.APPROVALS].find({"rollout_id": rollout_id})}


def approval_of_cid(db: Any, cid: int, job_id: str | None) -> dict[str, Any] | None:
    """The status JSON's `approval`: the record of the job's own request, else the CID's newest request."""
    from notes_migration.domain import config as C

    doc = db[C.APPROVALS].find_one({"job_id": job_id}) if job_id else None
    doc = doc or latest_approval(db, cid)
    return approval_view(doc) if doc else None


def latest_approval(db: Any, cid: int) -> dict[str, Any] | None:
    """The CID's newest approval request (any rollout): the status JSON's `approval`."""
    from notes_migration.domain import config as C

    found = list(db[C.APPROVALS].find({"cid": cid}).sort("requested_at", -1).limit(1))
    return found[0] if found else None


def preflight_figures(db: Any, cid: int, company_sso_id: str) -> dict[str, Any]:
    """What a CSM reads before approving a CID: its coverage preflight now (notes in scope, coverage against the
    gate) and its latest dry run (notes it would migrate, files and bytes to copy, expected failures, ETA)."""
    from notes_migration.ops.dry_run import latest_report
    from notes_migration.run.coverage import coverage_report
    from notes_migration.stores import settings
    from notes_migration.stores.connections import crm_connection

    out: dict[str, Any] = {}
    try:
        with crm_connection() as crm:
            cov = coverage_report(
                crm, db, cid, company_sso_id, include_activities=False, gate=settings.thresholds().coverage_gate
            )
        out["coverage"] = {
            k: cov[k]
            for k in ("notes_in_scope", "coverage_pct", "gate_pct", "passes_gate", "persons_total", "persons_unmapped")
        }
    except Exception as exc:  # the request is still shown, saying what could not be read
        out["coverage"] = {"error": f"{type(exc).__name__}: {exc}"}
    dry = latest_report(db, cid)
    if dry is None:
        out["dry_run"] = None
    else:
        files = dry.get("attachments") or {}
        out["dry_run"] = {
            "job_id": dry["job_id"],
            "state": dry["state"],
            "finished_at": dry.get("finished_at"),
            "notes_total": dry["counts"]["notes_total"],
            "would_migrate": dry["counts"]["would_migrate"],
            "expected_failures": sum(dry["counts"]["failed"].values()),
            "failed_by_reason": dry["counts"]["failed"],
            "failure_rate": dry["failure_rate"],
            "files": {k: files.get(k) for k in ("total", "to_copy", "to_copy_bytes", "would_fail") if k in files},
            "predicted_state": (dry.get("predicted_verdict") or {}).get("state"),
            "eta_s": (dry.get("eta") or {}).get("seconds"),
        }
    return out


def request_body(cid: int, company_sso_id: str, stage: str, figures: Mapping[str, Any]) -> str:
    """The request's Markdown body (pure): the CID, its company, its figures and what to answer."""
    cov, dry = figures.get("coverage") or {}, figures.get("dry_run")
    lines = [f"**CID** {cid} → **company** `{company_sso_id}` (stage {stage})", "", "**Coverage preflight**"]
    if "error" in cov:
        lines.append(f"- could not be computed: {cov['error']}")
    else:
        lines += [
            f"- notes in scope: {cov.get('notes_in_scope')}",
            f"- coverage: {cov.get('coverage_pct')} % (gate {cov.get('gate_pct')} %, "
            f"{'passes' if cov.get('passes_gate') else 'BELOW the gate: the run would halt'})",
            f"- persons unmapped: {cov.get('persons_unmapped')} of {cov.get('persons_total')}",
        ]
    lines += ["", "**Dry run**"]
    if not dry:
        lines.append("- none yet (trigger crm_notes_migration with dry_run: true to see the figures)")
    else:
        lines += [
            f"- {dry['would_migrate']} of {dry['notes_total']} notes would migrate; expected failures "
            f"{dry['expected_failures']} ({dry['failure_rate']:.2%}) {dry['failed_by_reason'] or ''}",
            f"- files: {dry['files']}",
            f"- predicted: {dry['predicted_state']}; ETA {dry['eta_s']} s (dry run {dry['job_id']})",
        ]
    lines += [
        "",
        "**Approve** with `window_start` and `window_end` (UTC ISO-8601, e.g. 2026-03-01T22:00:00Z) and `reference`"
        " (the CSM ticket): the CID starts no earlier than window_start and is not launched after window_end."
        " **Reject** ends it CSM_REJECTED; no answer before the timeout ends it APPROVAL_EXPIRED.",
    ]
    return "\n".join(lines)
