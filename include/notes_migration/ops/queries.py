"""The Ops surface's queries (status, fleet, per-CID detail, error log, trigger checks), for the plugin and the CLI.

Plain Python over the CRM connection and the CDP database, returning plain data;
refusals are reason-coded exceptions (codes.Refused). The plugin
(plugins/crm_notes_migration_ops) parses requests, authenticates and maps
results and reason codes to HTTP.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo.database import Database

from notes_migration.domain.accounting import sum_pages
from notes_migration.domain.codes import (
    ERROR_OUTCOMES,
    OUTCOME_FILTERS,
    RUN_ERROR_OUTCOME,
    AttachmentOutcome,
    Event,
    Halted,
    Outcome,
    Reason,
    Refused,
    State,
)
from notes_migration.domain.config import RunConfig
from notes_migration.domain.plain import as_plain
from notes_migration.domain.status import build_status, progress_pct, with_airflow_runs
from notes_migration.ops.approvals import approval_of_cid
from notes_migration.run.coverage import coverage_report, unmapped_person_entries
from notes_migration.run.start import check_preconditions
from notes_migration.stores import crm_source, job_store, settings

RUN_EVENTS = (Event.STARTED, Event.BATCH_COMPLETED, Event.HALTED, Event.COMPLETED)
NOTE_EVENTS = (Event.NOTE_FAILED, Event.OWNER_NOT_RESOLVED, Event.ATTACHMENT_FAILED)

ERROR_LOG_FIELDS = (
    "legacy_crm_note_id",
    "reason_code",
    "details",
    "outcome",
    "created_at",
    "reason",  # a short human reason, whatever the row
    "crm_person_id",  # COVERAGE_BELOW_GATE: one row per unmapped person
    "notes_affected",
    "attachment_id",  # attachment rows: "asset-<id>" / "document-<id>"
    "file_name",
    "source_key",  # the object's key in the CRM bucket
)

# The short reason of a row by its code (attachment download failures say whether the source is missing).
SHORT_REASONS = {
    Reason.COVERAGE_BELOW_GATE: "person has no CDP contact (crm_data.id / source_id) in the company",
    Reason.CONTACT_NOT_MAPPED: "the note's person has no CDP contact",
    Reason.NOTE_TOO_LARGE: "normalised HTML over the size cap",
    Reason.HTML_NORMALISATION_FAILED: "HTML could not be normalised",
    Reason.BATCH_INSERT_FAILED: "CDP insert failed after a retry",
    Reason.ATTACHMENT_DOWNLOAD_FAILED: "download from the CRM bucket failed after retries",
    Reason.ATTACHMENT_UPLOAD_FAILED: "upload to CDP storage failed after retries",
    Reason.ATTACHMENT_TOO_LARGE: "file over the attachment size cap",
    Reason.ATTACHMENT_UNSUPPORTED_TYPE: "file type not in the CDP allowlist",
}
SOURCE_MISSING = "source file missing in the CRM bucket"


# --------------------------------------------------------------------------- status


class UnknownCid(Refused, LookupError):
    """The CID is not an organization of the CRM (CID_NOT_FOUND)."""

    def __init__(self, cid: int):
        super().__init__(Reason.CID_NOT_FOUND, f"CID {cid} is not an organization of the CRM")
        self.cid = cid


def require_cid(crm, cid: int) -> None:
    """The one check that the CRM knows the CID: UnknownCid (CID_NOT_FOUND) otherwise."""
    if not crm_source.cid_exists(crm, cid):
        raise UnknownCid(cid)


def cid_status(db: Database, cid: int, runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The PRD §8 status of the CID's latest real (not dry) run, corrected by what Airflow knows of the
    CID's DAG runs when the caller can see them (`runs`, newest first: the plugin and the CLI pass them)."""
    job = job_store.latest_job(db, cid)
    if job is None:
        out = with_airflow_runs(build_status(cid, None, [], {}), None, runs)
        return _with_approval(db, cid, None, _why_refused(out, cid))
    pages = job_store.page_results(db, job["_id"])
    out = build_status(cid, job, pages, job_store.status_counts(db, job["_id"], pages))
    out["run_id"] = job.get("run_id")
    if job.get("retry"):  # failed-record retries of the job (retry.py): retried and recovered counts
        out["retry"] = as_plain(job["retry"])
    if job.get("signoff"):  # the latest sign-off of the job (ops/signoff.py): who, when, seed, verdict
        out["signoff"] = as_plain(job["signoff"])
    if out["status"] == State.ROLLED_BACK:
        record = job_store.rollback_record(db, out["rollback"]["rollback_id"]) or {}
        out["rollback"].update({k: record.get(k) for k in ("notes_deleted", "notes_already_gone", "objects_deleted")})
    return _with_approval(db, cid, job["_id"], with_airflow_runs(out, job, runs))


def _why_refused(out: dict[str, Any], cid: int) -> dict[str, Any]:
    """A run that failed in `preconditions` before recording a job was refused; when the CID's flag is OFF now,
    say so (`refused_reason: FLAG_DISABLED`): the likeliest refusal, and the one Ops fix themselves."""
    run = out.get("airflow_run") or {}
    if out.get("halted_reason") != Reason.RUN_FAILED or "preconditions" not in (run.get("failed_tasks") or []):
        return out
    if cid in settings.flag_cids():
        return out
    out["refused_reason"] = Reason.FLAG_DISABLED.value
    out["detail"] = f"{out['detail']}; refused: the feature flag is OFF for CID {cid} (as the flag stands now)"
    return out


def _with_approval(db: Database, cid: int, job_id: str | None, out: dict[str, Any]) -> dict[str, Any]:
    """`approval`: the CSM approval of the CID's latest job (Stage 2/3 rollouts), or its newest request when that
    job had none (e.g. pending, rejected, expired: no job at all); absent for a CID never asked."""
    approval = approval_of_cid(db, cid, job_id)
    if approval is not None:
        out["approval"] = as_plain(approval)
    return out


def status_of(crm, db: Database, cid: int, runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """As cid_status, for a CID the CRM knows; an unknown CID is an error (UnknownCid), not not_started."""
    require_cid(crm, cid)
    return cid_status(db, cid, runs)


# --------------------------------------------------------------------------- fleet


def attachment_success_pct(attachments: Mapping[str, Any] | None) -> float | None:
    """The relink success share in percent (`success_rate` is a 0–1 share of the files tried)."""
    if not attachments:
        return None
    rate = attachments.get("success_rate")
    if isinstance(rate, int | float):
        return round(100.0 * rate, 1)
    total, relinked = attachments.get("total"), attachments.get("relinked")
    if isinstance(total, int) and isinstance(relinked, int) and total:
        return round(100.0 * relinked / total, 1)
    return None


def fleet_row(job: Mapping[str, Any], pages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One line of the fleet table, from a job and its page results (pure)."""
    st = build_status(job["cid"], job, pages, {})
    totals = sum_pages(pages)
    validation = st.get("validation") or {}
    done = st["status"] in (State.COMPLETED_SUCCESS, State.COMPLETED_WITH_ERRORS)
    return {
        "cid": job["cid"],
        "status": st["status"],
        "job_id": job["_id"],
        "run_id": job.get("run_id"),
        "company_sso_id": job.get("company_sso_id"),
        "progress_pct": 100.0 if done else st.get("progress_pct", progress_pct(job, totals)),
        "notes_migrated": validation.get("found", totals.migrated + totals.already_migrated),
        "notes_total": st["counts"]["notes_total"],
        "notes_failed": totals.failed,
        "failure_rate": st.get("failure_rate", round(totals.failure_rate, 6)),
        "match_pct": validation.get("match_pct"),
        "attachment_success_pct": attachment_success_pct(job.get("attachments")),
        "halted_reason": st.get("halted_reason"),
        "pages_done": totals.pages_done,
        "pages_total": job.get("pages_total"),
        "updated_at": st.get("updated_at"),
        "created_at": st.get("created_at"),
        "triggered_by": job.get("triggered_by"),
    }


def fleet(db: Database, runs_by_cid: Mapping[int, list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """Every CID that has a (real) job: its latest job as a fleet row, by CID. Two queries in all.
    With `runs_by_cid` a row whose run Airflow saw die says so (RUN_FAILED), as the status does."""
    jobs = job_store.jobs_overview(db)
    pages = job_store.pages_of_jobs(db, [j["_id"] for j in jobs])
    rows = []
    for job in jobs:
        row = fleet_row(job, pages.get(job["_id"], []))
        runs = None if runs_by_cid is None else runs_by_cid.get(job["cid"], [])
        if row["status"] == State.IN_PROGRESS and runs is not None:
            corrected = with_airflow_runs({"status": row["status"], "job_id": job["_id"]}, job, runs)
            row.update(status=corrected["status"], halted_reason=corrected.get("halted_reason"))
        rows.append(row)
    return rows


def state_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = {s.value: 0 for s in State}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


# --------------------------------------------------------------------------- per-CID detail


def cid_detail(crm, db: Database, cid: int, runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Status, event timeline, failures by reason and the effective config of the CID's latest job."""
    status = status_of(crm, db, cid, runs)
    detail: dict[str, Any] = {
        "cid": cid,
        "status": status,
        "timeline": [],
        "event_counts": {},
        "failures_by_reason": [],
        "skips_by_reason": [],
        "config": None,
        "coverage": None,
    }
    job_id = status.get("job_id")
    if not job_id:
        return detail
    job = job_store.get_job(db, job_id) or {}
    detail["timeline"] = [as_plain(e) for e in job_store.run_events(db, job_id, [e.value for e in RUN_EVENTS])]
    detail["event_counts"] = job_store.event_counts(db, job_id)
    by_outcome = job_store.counts_by_outcome(db, job_id)
    detail["failures_by_reason"] = _by_reason(by_outcome, ERROR_OUTCOMES)
    detail["skips_by_reason"] = _by_reason(by_outcome, (Outcome.SKIPPED.value, AttachmentOutcome.SKIPPED.value))
    detail["config"] = job.get("config")
    detail["coverage"] = job.get("coverage")
    detail["halted"] = as_plain(job.get("halted"))
    detail["validation"] = job.get("validation")
    return detail


def _by_reason(by_outcome: Mapping[str, Mapping[str, int]], outcomes: Iterable[str]) -> list[dict[str, Any]]:
    rows = [
        {"outcome": o, "reason_code": r, "count": n} for o in outcomes for r, n in (by_outcome.get(o) or {}).items()
    ]
    return sorted(rows, key=lambda r: (-r["count"], r["reason_code"]))


# --------------------------------------------------------------------------- error log


def error_log(
    db: Database, job_id: str, outcome: str = "errors", limit: int = 0, *, crm=None
) -> list[dict[str, Any]] | None:
    """The job's reason-coded log entries (None when the job does not exist).

    A COVERAGE_BELOW_GATE halt lists every unmapped person first (given the CRM connection): the CRM's
    in-scope notes per person minus the persons the run resolved (its saved person map)."""
    job = job_store.get_job(db, job_id)
    if job is None:
        return None
    outcomes = OUTCOME_FILTERS[outcome]
    entries: list[Mapping[str, Any]] = []
    if crm is not None and (outcomes is None or RUN_ERROR_OUTCOME in outcomes):
        entries.extend(unmapped_persons(crm, db, job))
    if limit and len(entries) >= limit:
        return [error_row(e) for e in entries[:limit]]
    entries.extend(job_store.note_log(db, job_id, outcomes, limit=limit - len(entries) if limit else 0))
    return [error_row(e) for e in entries]


def unmapped_persons(crm, db: Database, job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The unmapped persons of a job that halted on the coverage gate (else none), as error-log entries."""
    if job.get("state") != State.HALTED or (job.get("halted") or {}).get("reason") != Reason.COVERAGE_BELOW_GATE:
        return []
    mapped = job_store.load_person_map(db, job["_id"])
    if mapped is None:  # the run saved no answers (purged after a year): nothing reliable to list
        return []
    cfg = RunConfig.from_dict(job["config"])
    per_person = crm_source.notes_per_person(crm, cfg.cid, cfg.include_activities)
    return unmapped_person_entries(dict(job), per_person, set(mapped))


def short_reason(reason_code: str | None, details: str | None, file: Mapping[str, Any] | None = None) -> str | None:
    """A reason an operator can act on, instead of only the library's text in `details` (pure)."""
    if reason_code == Reason.ATTACHMENT_DOWNLOAD_FAILED and (
        (file or {}).get("source_missing") or (details or "").startswith("source object missing")
    ):
        return SOURCE_MISSING
    try:
        return SHORT_REASONS.get(Reason(reason_code)) if reason_code else None
    except ValueError:
        return None


def error_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the error log: the entry's fields, with an attachment's id, name and source key flattened."""
    plain = as_plain(entry) or {}
    file = plain.get("file") if isinstance(plain.get("file"), Mapping) else None
    row = {k: v for k, v in plain.items() if k in ERROR_LOG_FIELDS}
    if file:
        row.update(attachment_id=file.get("ref"), file_name=file.get("name"), source_key=file.get("s3_key"))
    row["reason"] = short_reason(plain.get("reason_code"), plain.get("details"), file)
    return row


def _csv_cell(value: Any) -> Any:
    """Neutralise spreadsheet formulas: details can echo customer text (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def error_log_csv(entries: Iterable[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(ERROR_LOG_FIELDS)
    for entry in entries:
        writer.writerow([_csv_cell(entry.get(k)) for k in ERROR_LOG_FIELDS])
    return buf.getvalue()


# --------------------------------------------------------------------------- trigger


def check_trigger(
    crm, db: Database, cfg: RunConfig, *, flag_cids: Iterable[int], active_run_ids: Iterable[str] = ()
) -> None:
    """Every refusal the DAG's first task would give, checked before a run exists; raises Refused, writes nothing.

    Adds what only the API can see: a run of this CID that is queued or running
    in Airflow but has not taken the CID's lock yet."""
    check_preconditions(crm, db, cfg, flag_cids=flag_cids)
    lock = job_store.get_lock(db, cfg.cid)
    if lock is not None and job_store.lock_is_live(lock, cfg.thresholds.lock_lease_seconds):
        raise Refused(
            Reason.JOB_ALREADY_RUNNING,
            f"CID {cfg.cid} is locked by job {lock.get('job_id')} (run {lock.get('run_id')})",
        )
    active = sorted(active_run_ids)
    if active:
        raise Refused(Reason.JOB_ALREADY_RUNNING, f"CID {cfg.cid} already has a queued or running DAG run: {active[0]}")


# --------------------------------------------------------------------------- the answers the API and the CLI share
#
# The plugin's routes and its CLI call these, so both answer alike (same rows, same thresholds, same refusals).


def refusal_message(refused: Refused | Halted) -> str:
    """A refusal's message without its reason-code prefix (the exception's text is `CODE: message`)."""
    return str(refused).removeprefix(f"{refused.reason.value}: ")


def refusal_body(refused: Refused | Halted) -> dict[str, Any]:
    """What a refusal answers (the API with its HTTP status, the CLI with exit 3): `reason_code`, `message`
    (also as `detail`, the API's key since its first version) and what the refusal carries (a rollback's report)."""
    message = refusal_message(refused)
    body: dict[str, Any] = {"detail": message, "reason_code": refused.reason.value, "message": message}
    report = getattr(refused, "report", None)
    if isinstance(report, Mapping):
        body.update(as_plain(report) or {})
    return body


def status_answer(
    crm, db: Database, cid: int, runs: list[dict[str, Any]] | None = None, *, dry_run: bool = False
) -> dict[str, Any]:
    """The CID's status (PRD §8), or with `dry_run` its latest dry run's report; UnknownCid for a CID the CRM
    does not know."""
    require_cid(crm, cid)
    if dry_run:
        from notes_migration.ops.dry_run import dry_run_status

        return dry_run_status(db, cid)
    return cid_status(db, cid, runs)


def error_log_answer(db: Database, job_id: str, outcome: str = "errors", limit: int = 0, *, crm=None) -> dict[str, Any]:
    """The error log as JSON (`{job_id, outcome, count, entries}`); Refused JOB_NOT_FOUND for an unknown job."""
    entries = error_log(db, job_id, outcome, limit, crm=crm)
    if entries is None:
        raise Refused(Reason.JOB_NOT_FOUND, f"job {job_id} not found")
    return {"job_id": job_id, "outcome": outcome, "count": len(entries), "entries": entries}


def coverage_answer(
    crm, db: Database, cid: int, company_sso_id: str, *, include_activities: bool = False
) -> dict[str, Any]:
    """The Person→Contact coverage report on demand, against the gate of the settings Variable (as a run's)."""
    require_cid(crm, cid)
    gate = settings.thresholds().coverage_gate
    return coverage_report(crm, db, cid, company_sso_id, include_activities=include_activities, gate=gate)


def rollback_answer(crm, db: Database, cid: int, *, requested_by: str, execute: bool = False) -> dict[str, Any]:
    """Plan (the default) or perform a CID's rollback, with the lock lease of the settings Variable; executed,
    the copied files go from the CDP bucket too. Refused (nothing written) as rollback.rollback_cid."""
    from notes_migration.domain.config import CDP_S3_CONN_ID
    from notes_migration.ops import rollback
    from notes_migration.stores import s3_store as s3

    return rollback.rollback_cid(
        crm,
        db,
        cid,
        requested_by=requested_by,
        dry_run=not execute,
        target=s3.bucket_for(CDP_S3_CONN_ID) if execute else None,
        lease_seconds=settings.thresholds().lock_lease_seconds,
        writer=settings.thresholds().writer,
    )


def retry_answer(db: Database, job_id: str, reason_codes: Sequence[str] | None, *, requested_by: str) -> dict[str, Any]:
    """Retry a job's failed-record queue (retry.run_retry) and answer the job's state after it; the checks run
    before any connection to the CRM or S3, so a refusal (Refused) is cheap and writes nothing."""
    from notes_migration.ops import retry
    from notes_migration.stores.connections import crm_connection

    retry.check_retry(db, job_id, reason_codes)
    with crm_connection() as crm:
        record = retry.run_retry(crm, db, job_id, reason_codes, requested_by=requested_by)
    return retry.outcome(db, job_id, record)
