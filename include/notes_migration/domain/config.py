"""Connection ids, variable names, thresholds and the effective run config, in one place."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from notes_migration.domain.contract import DAG_ID, PAGE_LANES, UUID_RE, param, run_options

_JOB_NS = uuid.UUID("6f1c7a52-8d0e-4d4f-9a57-0b1c2e3f4a5b")

# Connections (credentials only ever come through these).
CRM_POSTGRES_CONN_ID = "crm_postgres"
CDP_MONGO_CONN_ID = "cdp_mongo"
CRM_S3_CONN_ID = "crm_s3"
CDP_S3_CONN_ID = "cdp_s3"
SLACK_CONN_ID = "slack_alerts"
PAGERDUTY_CONN_ID = "pagerduty_events"
CDP_NOTES_API_CONN_ID = "cdp_notes_api"  # the HTTP writer (PRD D-1): host = base URL, password = S2S token
DEFAULT_CDP_DATABASE = "cdp"

# Airflow Variables.
FLAG_VARIABLE = "crm_notes_migration_enabled"  # JSON list of CIDs with the flag ON
SETTINGS_VARIABLE = "crm_notes_migration_settings"  # optional JSON overriding Thresholds

# Activity taxonomy: entries of these types are activities, not notes (OQ-4).
ACTIVITY_TYPE_NAMES = frozenset({"Calls", "Emails", "Meetings", "WhatsApp", "SMS"})

UNKNOWN_OWNER_LABEL = "[Legacy CRM User]"

# The writers behind the writer seam (settings Variable key "writer"; the job's config snapshot records it).
MONGO_WRITER, HTTP_WRITER = "mongo", "http"
WRITERS = (MONGO_WRITER, HTTP_WRITER)

# Bookkeeping collections in the CDP database, all prefixed so they never
# collide with contact-service's own collections.
JOBS = "crm_migration_jobs"
LOCKS = "crm_migration_locks"
PAGES = "crm_migration_pages"
NOTE_LOG = "crm_migration_note_log"  # failed-record queue + skipped notes, reason-coded
AUDIT = "crm_migration_audit"  # legacy id → CDP note id
ROLLBACKS = "crm_migration_rollbacks"  # one record per executed rollback (ops/rollback.py)
EVENTS = "crm_migration_events"
PERSON_MAPS = "crm_migration_person_maps"  # a run's person → contact answers, saved by the coverage step
ATTACHMENT_PAGES = "crm_migration_attachment_pages"  # relink result per (job, page)
ROLLOUTS = "crm_migration_rollouts"  # one document per rollout (crm_notes_rollout run): its plan and its report
ROLLOUT_CIDS = "crm_migration_rollout_cids"  # one per (rollout, launched CID), written by the lane that launched it
APPROVALS = "crm_migration_approvals"  # one per (rollout, CID) asked for approval, written by its approval task only; never purged
WEEKLY = "crm_migration_weekly"  # one per week: the PRD §12 weekly aggregate
HOUSEKEEPING = "crm_migration_housekeeping"  # when each retention purge last ran (one document per purge)
CONTACT_NOTES = "contact_notes"

# Task pages (what one mapped migrate_page / relink task processes) against insert batches (`batch_size`, the
# unit of reading, deciding, inserting and accounting): a CID of up to TARGET_TASK_PAGES batches gets one task
# per batch; a larger one about TARGET_TASK_PAGES tasks of k consecutive batches each, processed one after
# another (memory stays that of one batch), k ≤ MAX_TASK_BATCHES unless MAX_TASK_PAGES tasks would not do.
# Under a real scheduler a task costs seconds of start-up and scheduling whatever it does (and as much again
# for its relink task), so one-batch tasks leave a large run mostly waiting; as many task pages
# as the run has lanes (contract.PAGE_LANES: the DAG's max_active_tasks and the mapped tasks' per-run cap)
# run all pages in one round, then all relinks in one round.
TARGET_TASK_PAGES = PAGE_LANES
MAX_TASK_BATCHES = 25
MAX_TASK_PAGES = 1024
CONTACTS = "contacts"
LAUNCHPAD_USERS = "launchpad_users"

__all__ = ["DAG_ID", "UUID_RE", "RunConfig", "Thresholds"]


@dataclass(frozen=True)
class Thresholds:
    """Gates of the PRD; overridable through the `crm_notes_migration_settings` Variable."""

    max_failure_rate: float = 0.01  # halt when hard failures / attempted exceeds this
    coverage_gate: float = 0.99  # Person→Contact resolution share needed before writing
    validation_match_pct: float = 99.0  # completed_success needs match_pct ≥ this
    attachment_alert_share: float = 0.20  # Slack when attachment failures exceed this
    note_size_cap_bytes: int = 512 * 1024  # normalised HTML above this is NOTE_TOO_LARGE
    attachment_size_cap_bytes: int = 25 * 1024 * 1024
    lock_lease_seconds: int = 3 * 3600  # a lock not refreshed for this long is stale
    failed_record_retention_days: int = 30
    job_retention_days: int = 365  # job records, pages, person maps, events (the audit map is kept forever)
    attachment_concurrency: int = 8
    attachment_relink_gate: float = 0.95  # PRD Stage-1 QA: relinked share where the source exists
    proxy_url_base: str = "https://cdp.example/api/v1/files"
    error_log_url_base: str = "/crm-notes-migration/api/jobs"
    crm_retries: int = 3  # PRD §9 #2: a CRM read is retried this many times with backoff, then CRM_EXTRACT_FAILED
    crm_retry_backoff_seconds: float = 2.0  # first backoff; doubles on each retry (2, 4, 8 s)
    # the writer seam (PRD D-1, §16b): "mongo" inserts into contact_notes directly (what Ops run today), "http"
    # posts to the CDP's POST /cdp/notes/migrate through the cdp_notes_api connection
    writer: str = "mongo"
    cdp_api_timeout_seconds: float = 30.0  # one request of the HTTP writer; a timeout is retried once (§9 #7)
    cdp_api_count_retries: int = 3  # the validation's count request (§9 #8), then VALIDATION_SKIPPED

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> Thresholds:
        """Build from a JSON mapping, refusing unknown keys loudly (typos must not pass silently)."""
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {SETTINGS_VARIABLE} keys: {sorted(unknown)}")
        if data.get("writer", "mongo") not in WRITERS:
            raise ValueError(f"{SETTINGS_VARIABLE} writer must be one of {list(WRITERS)}, not {data['writer']!r}")
        return cls(**data)


@dataclass(frozen=True)
class RunConfig:
    """The effective configuration of one run: the run contract's parameters plus thresholds.

    Stored whole on the job record by preconditions; every later task reads this snapshot
    (thresholds included) and nothing else."""

    cid: int
    company_sso_id: str
    batch_size: int = param("batch_size").default
    include_activities: bool = param("include_activities").default
    dry_run: bool = param("dry_run").default
    force_rerun: bool = param("force_rerun").default
    thresholds: Thresholds = field(default_factory=Thresholds)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], thresholds: Thresholds) -> RunConfig:
        """From a run's params/conf, checked against the run contract."""
        return cls(**run_options(params), thresholds=thresholds)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """A stored snapshot back. Keys this version does not know (a job recorded by another version of the
        package) are left out rather than failing every status and fleet read that meets the job."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        thresholds = data.get("thresholds") or {}
        known["thresholds"] = Thresholds(
            **{k: v for k, v in thresholds.items() if k in Thresholds.__dataclass_fields__}
        )
        return cls(**known)


def parse_flag(value: Any) -> frozenset[int]:
    """The flag Variable is a JSON list of CIDs; anything else means OFF for everyone."""
    if not isinstance(value, list):
        return frozenset()
    out = set()
    for item in value:
        try:
            out.add(int(item))
        except (TypeError, ValueError):
            continue
    return frozenset(out)


def job_id_for(run_id: str, cid: int) -> str:
    """Stable per (run, CID): a retried task finds the same job."""
    return str(uuid.uuid5(_JOB_NS, f"{DAG_ID}/{run_id}/{cid}"))
