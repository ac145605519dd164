"""Plain words beside the codes: what each state and reason code means to someone who is not an engineer.

The Ops view's CID detail and the sign-off view show these next to the code itself (the code stays the key a
script or a ticket uses). One entry per State and per Reason that a person can meet on those pages."""

from __future__ import annotations

from notes_migration.domain.codes import Reason, State

STATE_WORDS: dict[str, str] = {
    State.NOT_STARTED: "No migration has run for this account yet.",
    State.IN_PROGRESS: "The migration is running now.",
    State.HALTED: "The migration stopped before the end; nothing more is written until someone acts.",
    State.COMPLETED_SUCCESS: "All notes are in the CDP and the check after the run found them matching the CRM.",
    State.COMPLETED_WITH_ERRORS: "The run finished, but some notes failed or the check found differences.",
    State.ROLLED_BACK: "The migrated notes were taken back out of the CDP.",
}

REASON_WORDS: dict[str, str] = {
    Reason.FLAG_DISABLED: "The migration is switched off for this account (its feature flag is not on).",
    Reason.CID_NOT_FOUND: "The CRM has no account with this number.",
    Reason.INVALID_COMPANY_SSO_ID: "The CDP company id given is not a valid id.",
    Reason.ALREADY_MIGRATED: "This account was already migrated; a re-run must be asked for explicitly.",
    Reason.JOB_ALREADY_RUNNING: "Another migration of this account is already running.",
    Reason.COVERAGE_BELOW_GATE: "Too many of the account's people have no matching CDP contact to start.",
    Reason.FAILURE_RATE_EXCEEDED: "More than 1% of the notes failed, so the run stopped itself.",
    Reason.CRM_EXTRACT_FAILED: "The CRM could not be read, even after retries.",
    Reason.VALIDATION_SKIPPED: "The check after the run could not count the CRM's notes.",
    Reason.CANCELLED: "Someone in Ops cancelled the run.",
    Reason.JOB_NOT_FOUND: "No such migration job.",
    Reason.JOB_ALREADY_FINISHED: "The job had already finished.",
    Reason.RUN_FAILED: "Airflow stopped the run (a task died or the run was marked failed).",
    Reason.RUN_NOT_FOUND: "Airflow no longer has the run of this job.",
    Reason.LOCK_LOST: "Another process took over this account, so this one stopped writing.",
    Reason.SIGNOFF_REFUSED: "A sign-off needs a finished migration and a written verdict.",
    Reason.CONTACT_NOT_MAPPED: "The note's person has no contact in the CDP, so the note has nowhere to go.",
    Reason.NOTE_TOO_LARGE: "The note is larger than the CDP accepts (512 KB).",
    Reason.HTML_NORMALISATION_FAILED: "The note's formatting could not be cleaned safely.",
    Reason.BATCH_INSERT_FAILED: "Writing the note into the CDP failed, even after a retry.",
    Reason.NOT_A_PERSON_NOTE: "Not a note about a person (a company, deal or ticket note): out of scope.",
    Reason.ACTIVITY_OUT_OF_SCOPE: "A call, email, meeting, WhatsApp or SMS entry: only notes are migrated.",
    Reason.CHECKIN_DROPPED: "The note's check-in (location) is not migrated, on purpose; the note itself is.",
    Reason.HTML_FLATTENED_TO_TEXT: "The note's formatting was too complex to clean, so its text was kept as "
    "plain text.",
    Reason.ATTACHMENT_UNSUPPORTED_TYPE: "The file's type is not one the CDP accepts, so it was left out.",
    Reason.ATTACHMENT_TOO_LARGE: "The file is larger than the CDP accepts (25 MB), so it was left out.",
    Reason.ATTACHMENT_DOWNLOAD_FAILED: "The file could not be read from the CRM's storage; agents see "
    "'Attachment unavailable'.",
    Reason.ATTACHMENT_UPLOAD_FAILED: "The file could not be written to the CDP's storage; agents see "
    "'Attachment unavailable'.",
}

# Not reason codes, but what the sign-off sample calls out beside them.
OWNER_NOT_RESOLVED_WORDS = "The CRM author has no CDP user, so the note shows the author's name as a legacy label."


def state_words(state: str | None) -> str:
    return STATE_WORDS.get(state or "", "")


def reason_words(code: str | None) -> str:
    if code == "OWNER_NOT_RESOLVED":  # the sign-off table's one warning that is not a Reason
        return OWNER_NOT_RESOLVED_WORDS
    return REASON_WORDS.get(code or "", "")
