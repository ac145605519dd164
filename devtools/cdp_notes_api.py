"""Reference implementation of the CDP notes migrate contract (contracts/cdp_notes_migrate.openapi.yaml):
FastAPI over the CDP MongoDB, for local runs and tests. Not contact-service: it shows what the contract means
and lets tests/conformance/ be checked against something real before the CDP team ships theirs.

    python -m devtools.cdp_notes_api --port 9340          # scripts/services.sh starts it on loopback

The database is the `cdp_mongo` connection's (the tests re-point it to `cdp_test`). Tokens: S2S tokens from
CDP_NOTES_API_S2S_TOKENS, user tokens (authenticated, but not allowed here: 403) from CDP_NOTES_API_USER_TOKENS,
comma-separated; the local defaults are in airflow_settings.yaml's `cdp_notes_api` connection."""

# No `from __future__ import annotations`: FastAPI reads the route signatures' annotations at runtime.
import argparse
import datetime as dt
import os
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from bson import ObjectId
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, model_validator
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from notes_migration.domain.config import CONTACT_NOTES, UUID_RE
from notes_migration.domain.html import NormalisationError, normalise, utf8_size
from notes_migration.stores import cdp_store

DEFAULT_S2S_TOKEN = "local-s2s-token"
DEFAULT_USER_TOKEN = "local-user-token"
MAX_NOTES = 1000
MAX_NOTE_BYTES = 512 * 1024
MARKER = "legacy_crm_note_id"
UUID_PATTERN = UUID_RE.pattern
DUPLICATE_KEY = 11000


class Attachment(BaseModel):
    type: Literal["image", "voice_note", "audio", "document"]
    file_type: str
    name: str
    size: int = Field(ge=0)
    mime_type: str
    url: str | None = None  # absent only on an entry marked unavailable
    unavailable: bool | None = None
    reason_code: str | None = None
    message: str | None = None
    legacy_crm_file: str | None = None  # the migration's source file: a re-run replaces its own entries

    @model_validator(mode="after")
    def _url_unless_unavailable(self) -> "Attachment":
        if self.url is None and not self.unavailable:
            raise ValueError("url is required unless the entry is unavailable")
        return self


class MigratedNote(BaseModel):
    legacy_crm_note_id: int = Field(ge=1)
    contact_id: str = Field(min_length=1)
    owner_id: str | None = None
    legacy_owner_label: str | None = None
    note: str
    attachments: list[Attachment] = []
    created_at: dt.datetime
    updated_at: dt.datetime


class MigrateRequest(BaseModel):
    company_sso_id: str = Field(pattern=UUID_PATTERN)
    notes: list[MigratedNote] = Field(min_length=1, max_length=MAX_NOTES)


class NoteAttachments(BaseModel):
    legacy_crm_note_id: int = Field(ge=1)
    attachments: list[Attachment]


class AttachmentsRequest(BaseModel):
    company_sso_id: str = Field(pattern=UUID_PATTERN)
    notes: list[NoteAttachments] = Field(min_length=1, max_length=MAX_NOTES)


def _tokens(var: str, default: str) -> frozenset[str]:
    return frozenset(t.strip() for t in os.environ.get(var, default).split(",") if t.strip())


def _utc(value: dt.datetime) -> dt.datetime:
    """Caller-set timestamps kept as given, in UTC, to the millisecond (what BSON stores)."""
    value = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _iso(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def _rejected(note: MigratedNote) -> str | None:
    """The reason a note is refused, or None (reason codes of the contract's `RejectReason`)."""
    if note.updated_at < note.created_at:
        return "INVALID_TIMESTAMPS"
    if utf8_size(note.note) > MAX_NOTE_BYTES:
        return "NOTE_TOO_LARGE"
    if note.owner_id is not None and not UUID_RE.fullmatch(note.owner_id):
        return "INVALID_OWNER_ID"
    return None


def _document(company: str, note: MigratedNote) -> tuple[dict | None, str | None]:
    reason = _rejected(note)
    if reason:
        return None, reason
    try:
        html = normalise(note.note, max_input_bytes=MAX_NOTE_BYTES).html  # server-side sanitising (D-4/D-8)
    except NormalisationError:
        return None, "NOTE_TOO_LARGE"
    if utf8_size(html) > MAX_NOTE_BYTES:
        return None, "NOTE_TOO_LARGE"
    doc: dict[str, Any] = {
        "_id": ObjectId(),
        "company_sso_id": company,
        "contact_id": note.contact_id,
        "owner_id": note.owner_id,
        "note": html,
        "attachments": [a.model_dump(exclude_none=True) for a in note.attachments],
        "created_at": _utc(note.created_at),
        "updated_at": _utc(note.updated_at),
        "legacy_crm_note_id": note.legacy_crm_note_id,
    }
    if note.legacy_owner_label is not None:
        doc["legacy_owner_label"] = note.legacy_owner_label
    return doc, None


def migrate(db: Database, request: MigrateRequest) -> list[dict[str, Any]]:
    """Insert what is new, skip what exists (the unique (company, legacy id) index decides), reject the rest."""
    results: dict[int, dict[str, Any]] = {}
    docs: list[dict] = []
    for note in request.notes:
        legacy = note.legacy_crm_note_id
        if legacy in results or any(d["legacy_crm_note_id"] == legacy for d in docs):
            results[legacy] = {"legacy_crm_note_id": legacy, "status": "rejected", "reason": "DUPLICATE_IN_BATCH"}
            continue
        doc, reason = _document(request.company_sso_id, note)
        if doc is None:
            results[legacy] = {"legacy_crm_note_id": legacy, "status": "rejected", "reason": reason}
        else:
            docs.append(doc)
    dups: set[int] = set()
    if docs:
        try:
            db[CONTACT_NOTES].insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            for err in exc.details.get("writeErrors", []):
                legacy = docs[err["index"]]["legacy_crm_note_id"]
                if err.get("code") == DUPLICATE_KEY:
                    dups.add(legacy)
                else:
                    results[legacy] = {"legacy_crm_note_id": legacy, "status": "rejected", "reason": "STORE_REFUSED"}
    for doc in docs:
        legacy = doc["legacy_crm_note_id"]
        if legacy in dups:
            results[legacy] = {"legacy_crm_note_id": legacy, "status": "already_migrated"}
        elif legacy not in results:
            results[legacy] = {"legacy_crm_note_id": legacy, "status": "inserted", "note_id": str(doc["_id"])}
    return [results[n.legacy_crm_note_id] for n in request.notes if n.legacy_crm_note_id in results]


def create_app(
    db: Database, *, s2s_tokens: Iterable[str] | None = None, user_tokens: Iterable[str] | None = None
) -> FastAPI:
    s2s = frozenset(s2s_tokens) if s2s_tokens is not None else _tokens("CDP_NOTES_API_S2S_TOKENS", DEFAULT_S2S_TOKEN)
    users = (
        frozenset(user_tokens) if user_tokens is not None else _tokens("CDP_NOTES_API_USER_TOKENS", DEFAULT_USER_TOKEN)
    )
    cdp_store.ensure_note_index(db)
    app = FastAPI(title="CDP notes migrate (reference implementation)", version="1.0.0")
    bearer = HTTPBearer(auto_error=False)

    def service(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        token = creds.credentials if creds else None
        if token in s2s:
            return
        if token in users:
            raise HTTPException(403, {"reason": "S2S_TOKEN_REQUIRED", "message": "a user token may not migrate"})
        raise HTTPException(401, {"reason": "UNAUTHENTICATED", "message": "an S2S bearer token is required"})

    S2S = Depends(service)
    Company = Annotated[str, Query(pattern=UUID_PATTERN)]

    @app.post("/cdp/notes/migrate", dependencies=[S2S])
    def post_migrate(request: MigrateRequest) -> dict[str, Any]:
        return {"company_sso_id": request.company_sso_id, "results": migrate(db, request)}

    @app.post("/cdp/notes/migrate/attachments", dependencies=[S2S])
    def post_attachments(request: AttachmentsRequest) -> dict[str, Any]:
        results = []
        for item in request.notes:
            query = {"company_sso_id": request.company_sso_id, "legacy_crm_note_id": item.legacy_crm_note_id}
            attachments = [a.model_dump(exclude_none=True) for a in item.attachments]
            matched = db[CONTACT_NOTES].update_one(query, {"$set": {"attachments": attachments}}).matched_count
            status = "updated" if matched else "not_found"
            results.append({"legacy_crm_note_id": item.legacy_crm_note_id, "status": status})
        return {"company_sso_id": request.company_sso_id, "results": results}

    @app.get("/cdp/notes/migrated/count", dependencies=[S2S])
    def get_count(company_sso_id: Company, marker: Literal["legacy_crm_note_id"] = MARKER) -> dict[str, Any]:
        query = {"company_sso_id": company_sso_id, marker: {"$exists": True}}
        count = db[CONTACT_NOTES].count_documents(query)
        return {"company_sso_id": company_sso_id, "marker": marker, "count": count}

    @app.get("/cdp/notes/migrated/{legacy_crm_note_id}", dependencies=[S2S])
    def get_note(legacy_crm_note_id: int, company_sso_id: Company) -> dict[str, Any]:
        doc = db[CONTACT_NOTES].find_one({"company_sso_id": company_sso_id, "legacy_crm_note_id": legacy_crm_note_id})
        if doc is None:
            raise HTTPException(404, {"reason": "NOT_FOUND", "message": "no migrated note with that id"})
        doc["note_id"] = str(doc.pop("_id"))
        return {k: _iso(v) for k, v in doc.items()}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from notes_migration.stores.connections import cdp_database

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("CDP_NOTES_API_PORT", "9340")))
    args = parser.parse_args(argv)
    uvicorn.run(create_app(cdp_database()), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
