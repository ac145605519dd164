"""The one vocabulary of the migration: reason codes, event names, job states.

Every module, test and document uses these constants, so a behaviour of the
PRD can be found by its name.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a run was refused, or why a note (or a file) was not migrated as is."""

    # run-level refusals (preconditions)
    FLAG_DISABLED = "FLAG_DISABLED"
    CID_NOT_FOUND = "CID_NOT_FOUND"
    INVALID_COMPANY_SSO_ID = "INVALID_COMPANY_SSO_ID"
    ALREADY_MIGRATED = "ALREADY_MIGRATED"
    JOB_ALREADY_RUNNING = "JOB_ALREADY_RUNNING"
    COVERAGE_BELOW_GATE = "COVERAGE_BELOW_GATE"
    FAILURE_RATE_EXCEEDED = "FAILURE_RATE_EXCEEDED"
    # run-level, after start: the CRM kept failing (PRD §9 #2), validation could not count (§9 #8), cancel
    CRM_EXTRACT_FAILED = "CRM_EXTRACT_FAILED"
    VALIDATION_SKIPPED = "VALIDATION_SKIPPED"
    CANCELLED = "CANCELLED"
    # the HTTP writer (PRD D-1): the CDP notes API refused the S2S token (401/403); the run is refused, or halts
    # at the batch that met it, and writes no note after it
    CDP_API_UNAUTHORIZED = "CDP_API_UNAUTHORIZED"
    # refusals of the Ops API's job actions (cancel): nothing written
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    JOB_ALREADY_FINISHED = "JOB_ALREADY_FINISHED"
    # refusals of a CID rollback: nothing written
    NOTHING_TO_ROLL_BACK = "NOTHING_TO_ROLL_BACK"
    ROLLBACK_REFUSED = "ROLLBACK_REFUSED"  # notes changed in CDP after migration (listed)
    RUN_FAILED = "RUN_FAILED"  # Airflow saw the run die (task killed, marked failed) before the job finished
    RUN_NOT_FOUND = "RUN_NOT_FOUND"  # the job's Airflow run was deleted (or belongs to another Airflow)
    # a writer (a run's task, a retry, a rollback) that no longer holds the CID's lock, or whose Airflow run was
    # stopped: it writes nothing more (fencing)
    LOCK_LOST = "LOCK_LOST"
    # refusals of a failed-record retry (OQ-3): nothing written
    NOTHING_TO_RETRY = "NOTHING_TO_RETRY"  # no failed note (of the reasons asked) in the job's queue
    RETRY_REFUSED = "RETRY_REFUSED"  # not retryable: dry run, halted, superseded, outside retention, too many …
    # refusal of the Ops API's rollout view
    ROLLOUT_NOT_FOUND = "ROLLOUT_NOT_FOUND"
    # refusal of a sign-off (ops/signoff.py): no finished job, or no verdict; nothing written
    SIGNOFF_REFUSED = "SIGNOFF_REFUSED"
    # note-level hard failures (the failed-record queue)
    CONTACT_NOT_MAPPED = "CONTACT_NOT_MAPPED"
    NOTE_TOO_LARGE = "NOTE_TOO_LARGE"
    HTML_NORMALISATION_FAILED = "HTML_NORMALISATION_FAILED"
    BATCH_INSERT_FAILED = "BATCH_INSERT_FAILED"
    # note-level skips and deliberate drops (not failures)
    NOT_A_PERSON_NOTE = "NOT_A_PERSON_NOTE"
    ACTIVITY_OUT_OF_SCOPE = "ACTIVITY_OUT_OF_SCOPE"
    CHECKIN_DROPPED = "CHECKIN_DROPPED"
    # a CDP contact of an unexpected shape (crm_data neither absent nor an object): skipped for resolution and
    # counted in the coverage report, never a crash
    CONTACT_MALFORMED = "CONTACT_MALFORMED"
    # note-level warning (the note is migrated): its markup was out of the sanitiser's reach (nesting, attribute
    # count, no fixed point), so its text was kept, escaped, instead of its HTML
    HTML_FLATTENED_TO_TEXT = "HTML_FLATTENED_TO_TEXT"
    # attachment-level
    ATTACHMENT_UNSUPPORTED_TYPE = "ATTACHMENT_UNSUPPORTED_TYPE"
    ATTACHMENT_TOO_LARGE = "ATTACHMENT_TOO_LARGE"
    ATTACHMENT_DOWNLOAD_FAILED = "ATTACHMENT_DOWNLOAD_FAILED"
    ATTACHMENT_UPLOAD_FAILED = "ATTACHMENT_UPLOAD_FAILED"


class Outcome(StrEnum):
    """What became of one CRM note in one run."""

    MIGRATED = "migrated"
    ALREADY_MIGRATED = "already_migrated"
    SKIPPED = "skipped"
    FAILED = "failed"


class AttachmentOutcome(StrEnum):
    """What became of one source file; stored as `outcome` in the note log, apart from the note outcomes."""

    RELINKED = "attachment_relinked"
    SKIPPED = "attachment_skipped"
    FAILED = "attachment_failed"


class Event(StrEnum):
    """The PRD §12 events, emitted as structured log lines and persisted records."""

    STARTED = "crm_notes_migration_started"
    BATCH_COMPLETED = "crm_notes_migration_batch_completed"
    NOTE_FAILED = "crm_notes_migration_note_failed"
    OWNER_NOT_RESOLVED = "crm_notes_migration_owner_not_resolved"
    ATTACHMENT_FAILED = "crm_notes_migration_attachment_failed"
    HALTED = "crm_notes_migration_halted"
    COMPLETED = "crm_notes_migration_completed"


class State(StrEnum):
    """The Monitor API states (PRD §8)."""

    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    HALTED = "halted"
    COMPLETED_SUCCESS = "completed_success"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    ROLLED_BACK = "rolled_back"  # a status only: the CID's migrated notes were taken back (ops/rollback.py)


class RolloutOutcome(StrEnum):
    """Why a rollout ended a CID without launching its migration run (Stage 2/3 CSM approval, PRD §14/§15).

    A vocabulary of the rollout report, apart from `Reason`: no migration run (no job, no note log) ever
    carries these; they are never halts and never count for a stage gate."""

    CSM_REJECTED = "CSM_REJECTED"  # the CSM answered Reject
    APPROVAL_EXPIRED = "APPROVAL_EXPIRED"  # nobody answered before the request's timeout
    WINDOW_MISSED = "WINDOW_MISSED"  # approved, but no lane could launch it before window_end
    APPROVAL_INVALID = "APPROVAL_INVALID"  # answered Approve without a usable window (missing, unparsable, end ≤ start)


class ApprovalState(StrEnum):
    """Where one CID's approval request stands (the `approval.state` of the status JSON and the report)."""

    NOT_REQUIRED = "not_required"  # stage qa
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    INVALID = "invalid"


class Stage(StrEnum):
    """The rollout's stage (PRD §14): qa needs no approval; pilot and batch ask one per CID."""

    QA = "qa"
    PILOT = "pilot"
    BATCH = "batch"


class Gate(StrEnum):
    """The stage gate that stopped a rollout from launching more CIDs (the report's `stopped_by`)."""

    PILOT_PIPELINE_BUG = "pilot_pipeline_bug"  # pilot: a halt whose reason is not a data reason
    HALT_RATE = "halt_rate"  # batch (and qa): halted ÷ finished CIDs above halt_gate


# Halts the data explain (the CID's contacts or notes), not the pipeline: the pilot gate lets them pass. A cancel
# is an Ops decision, not a bug, so it passes too; every other halt reason (RUN_FAILED, CRM_EXTRACT_FAILED,
# LOCK_LOST, a refusal …) stops a pilot.
DATA_HALT_REASONS = frozenset({Reason.COVERAGE_BELOW_GATE, Reason.FAILURE_RATE_EXCEEDED, Reason.CANCELLED})


# The skips that are the CID's scope, not the run's doing; a skip for any other reason is a note held back
# by a halt (its reason is the halt's: FAILURE_RATE_EXCEEDED, CRM_EXTRACT_FAILED, CANCELLED …).
OUT_OF_SCOPE_REASONS = frozenset({Reason.NOT_A_PERSON_NOTE, Reason.ACTIVITY_OUT_OF_SCOPE, Reason.CHECKIN_DROPPED})

TERMINAL_STATES = frozenset({State.HALTED, State.COMPLETED_SUCCESS, State.COMPLETED_WITH_ERRORS, State.ROLLED_BACK})

# A run-level entry of the error log (no note id): CRM_EXTRACT_FAILED, VALIDATION_SKIPPED.
RUN_ERROR_OUTCOME = "run_error"

# The error log: what went wrong (run errors, note failures and attachment failures); `all` adds the skips.
ERROR_OUTCOMES = (RUN_ERROR_OUTCOME, Outcome.FAILED.value, AttachmentOutcome.FAILED.value)
OUTCOME_FILTERS: dict[str, tuple[str, ...] | None] = {
    "errors": ERROR_OUTCOMES,
    "failed": (Outcome.FAILED.value,),
    "skipped": (Outcome.SKIPPED.value,),
    "attachment_failed": (AttachmentOutcome.FAILED.value,),
    "attachment_skipped": (AttachmentOutcome.SKIPPED.value,),
    "all": None,
}


# --------------------------------------------------------------------------- the exceptions that carry a reason


class Refused(Exception):
    """The run must not start; nothing was written."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


class Halted(Exception):
    """The run stopped on purpose; later pages write nothing."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


class Fenced(Halted):
    """A writer found, immediately before a write, that it no longer holds the CID's lock (LOCK_LOST) or that its
    Airflow run was stopped (RUN_FAILED): the write did not happen, and nothing more will be written by it."""

    def __init__(self, message: str, reason: Reason = Reason.LOCK_LOST):
        super().__init__(reason, message)


class AlreadyHalted(Halted):
    """Raised by a page that starts after the run halted: it read and wrote nothing."""
