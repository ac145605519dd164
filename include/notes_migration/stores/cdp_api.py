"""The CDP notes API (PRD D-1): the HTTP writer behind the writer seam, the source-scoped count, and the
choice between the two writers.

The contract is `contracts/cdp_notes_migrate.openapi.yaml`; `devtools/cdp_notes_api.py` implements it over
MongoDB and `tests/conformance/` checks any implementation of it. The S2S token comes from the
`cdp_notes_api` connection's password and never leaves this module (it is not logged, not in errors).

Behaviour of PRD §9 row 7: a 5xx or a timeout is retried once, then every note of the batch fails
BATCH_INSERT_FAILED (the run goes on; the 1% halt still applies); a note the service rejects fails
BATCH_INSERT_FAILED with the service's reason; a 401/403 raises Unauthorized (CDP_API_UNAUTHORIZED), which
refuses or halts the run: it is never a per-note failure."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import httpx
from bson import ObjectId
from pymongo.database import Database

from notes_migration.domain.codes import Reason
from notes_migration.domain.config import CDP_NOTES_API_CONN_ID, HTTP_WRITER, Thresholds
from notes_migration.stores import cdp_store
from notes_migration.stores.cdp_store import WriteResult

log = logging.getLogger(__name__)

MIGRATE_PATH = "/cdp/notes/migrate"
ATTACHMENTS_PATH = "/cdp/notes/migrate/attachments"
COUNT_PATH = "/cdp/notes/migrated/count"
MARKER = "legacy_crm_note_id"  # the count's marker: notes carrying a legacy CRM id (migrated notes)
MAX_BATCH = 1000


class Unauthorized(Exception):
    """The service refused the S2S token (401) or its scope (403): nothing of the request was written."""

    reason = Reason.CDP_API_UNAUTHORIZED

    def __init__(self, status: int, what: str):
        self.detail = f"{what} answered {status} (S2S token refused)"
        super().__init__(f"{Reason.CDP_API_UNAUTHORIZED.value}: {self.detail}")
        self.status = status


class Unavailable(Exception):
    """5xx, timeout or connection error after the retry: the request's outcome is unknown."""


class NoteWriter(Protocol):
    """The writer seam: one batch of contact_notes documents in, each note's outcome out."""

    def write(self, docs: list[dict]) -> WriteResult: ...


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    token: str  # the S2S bearer token; repr hidden below
    timeout: float = 30.0

    def __repr__(self) -> str:
        return f"Endpoint({self.base_url!r}, token=***)"


def endpoint(thresholds: Thresholds, conn_id: str = CDP_NOTES_API_CONN_ID) -> Endpoint:
    """The service's base URL and token from the connection (host with or without a scheme, port, password)."""
    from airflow.sdk.bases.hook import BaseHook

    conn = BaseHook.get_connection(conn_id)
    host = (conn.host or "").rstrip("/")
    if "://" not in host:
        host = f"{conn.schema or 'http'}://{host}"
    if conn.port:
        host = f"{host}:{conn.port}"
    return Endpoint(host, conn.password or "", thresholds.cdp_api_timeout_seconds)


@cache
def _client(base_url: str, timeout: float) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=timeout)


def _wire(value: Any) -> Any:
    """A contact_notes value as JSON: dates as ISO-8601 UTC with milliseconds (BSON keeps no more)."""
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items() if k != "_id"}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def _note_id(value: Any) -> Any:
    """The service's note id; an ObjectId when it is one (CDP's `_id`), so the audit map matches the store."""
    return ObjectId(value) if isinstance(value, str) and ObjectId.is_valid(value) else value


class HttpNoteWriter:
    """`POST /cdp/notes/migrate`, a batch ≤ 1000 per request, the company explicit (never from a token)."""

    max_batch = MAX_BATCH

    def __init__(self, api: Endpoint, client: httpx.Client | None = None, sleep: Callable[[float], None] = time.sleep):
        self.api = api
        self.client = client or _client(api.base_url, api.timeout)
        self.sleep = sleep

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """One request, retried once on a 5xx, a timeout or a dropped connection; 401/403 raise Unauthorized."""
        headers = {"Authorization": f"Bearer {self.api.token}"}
        last = ""
        for attempt in (1, 2):
            try:
                resp = self.client.request(method, path, headers=headers, timeout=self.api.timeout, **kwargs)
            except httpx.TransportError as exc:  # timeouts included
                last = f"{type(exc).__name__}: {exc}"[:300]
            else:
                if resp.status_code in (401, 403):
                    raise Unauthorized(resp.status_code, what)
                if resp.status_code < 500:
                    return resp
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            if attempt == 1:
                log.warning("%s failed (%s): retrying once", what, last)
                self.sleep(0.5)
        raise Unavailable(f"{what}: {last}")

    def write(self, docs: list[dict]) -> WriteResult:
        result = WriteResult()
        for i in range(0, len(docs), self.max_batch):
            self._write_batch(docs[i : i + self.max_batch], result)
        return result

    def _write_batch(self, docs: list[dict], result: WriteResult) -> None:
        if not docs:
            return
        companies = {d["company_sso_id"] for d in docs}
        if len(companies) != 1:
            raise ValueError(f"one batch holds one company's notes, not {sorted(companies)}")
        for doc in docs:
            if doc.get("legacy_crm_note_id") is None:
                raise ValueError("refusing to write a contact_notes document without legacy_crm_note_id")
        body = {
            "company_sso_id": companies.pop(),
            "notes": [{k: _wire(v) for k, v in d.items() if k not in ("_id", "company_sso_id")} for d in docs],
        }
        legacy_ids = [d["legacy_crm_note_id"] for d in docs]
        try:
            resp = self._request("POST", MIGRATE_PATH, f"POST {MIGRATE_PATH}", json=body)
        except Unavailable as exc:
            result.errors.update(dict.fromkeys(legacy_ids, str(exc)[:300]))
            return
        if resp.status_code != 200:  # a 4xx of the whole batch: every note of it is refused
            detail = f"HTTP {resp.status_code}: {resp.text[:200]}"
            result.errors.update(dict.fromkeys(legacy_ids, detail))
            return
        answered = {r["legacy_crm_note_id"]: r for r in resp.json().get("results", [])}
        for legacy in legacy_ids:
            r = answered.get(legacy)
            status = (r or {}).get("status")
            if status == "inserted":
                result.inserted[legacy] = _note_id(r.get("note_id"))  # type: ignore[union-attr]
            elif status == "already_migrated":
                result.already_migrated.add(legacy)
            elif status == "rejected":
                result.errors[legacy] = f"rejected: {(r or {}).get('reason', 'no reason given')}"[:300]
            else:
                result.errors[legacy] = "no result for this note in the service's answer"

    def set_attachments(self, company_sso_id: str, updates: list[tuple[int, list[dict]]]) -> int:
        """The whole `attachments` array of migrated notes, by legacy id (POST /cdp/notes/migrate/attachments)."""
        done = 0
        for i in range(0, len(updates), self.max_batch):
            part = updates[i : i + self.max_batch]
            body = {
                "company_sso_id": company_sso_id,
                "notes": [{"legacy_crm_note_id": nid, "attachments": _wire(a)} for nid, a in part],
            }
            resp = self._request("POST", ATTACHMENTS_PATH, f"POST {ATTACHMENTS_PATH}", json=body)
            resp.raise_for_status()
            results = resp.json().get("results", [])
            done += sum(1 for r in results if r.get("status") == "updated")
            missing = [r for r in results if r.get("status") != "updated"]
            if missing:
                log.warning("attachments of %d notes not set by the service: %s", len(missing), missing[:3])
        return done

    def count(self, company_sso_id: str) -> int:
        """The company's migrated notes (those with the marker), as the service counts them."""
        resp = self._request(
            "GET", COUNT_PATH, f"GET {COUNT_PATH}", params={"company_sso_id": company_sso_id, "marker": MARKER}
        )
        resp.raise_for_status()
        return int(resp.json()["count"])


# --------------------------------------------------------------------------- the writer of a run


def uses_http(thresholds: Thresholds) -> bool:
    return thresholds.writer == HTTP_WRITER


def http_writer(thresholds: Thresholds) -> HttpNoteWriter:
    return HttpNoteWriter(endpoint(thresholds))


def note_writer(db: Database, thresholds: Thresholds) -> NoteWriter:
    """The writer a run's snapshot names: MongoDB directly (default) or the CDP notes API."""
    return http_writer(thresholds) if uses_http(thresholds) else cdp_store.MongoNoteWriter(db)


def set_attachments(
    db: Database, thresholds: Thresholds, company_sso_id: str, updates: list[tuple[Any, int, list[dict]]]
) -> int:
    """Each note's new `attachments` ((CDP _id, legacy id, attachments) per note) through the run's writer."""
    if not updates:
        return 0
    if uses_http(thresholds):
        return http_writer(thresholds).set_attachments(company_sso_id, [(nid, a) for _, nid, a in updates])
    return cdp_store.set_note_attachments(db, [(note_id, a) for note_id, _, a in updates])


def check_access(thresholds: Thresholds, company_sso_id: str) -> None:
    """Before a run writes anything: the token is accepted (the count endpoint answers). Raises Unauthorized;
    an unavailable service is left to the batches (retried, then BATCH_INSERT_FAILED)."""
    try:
        http_writer(thresholds).count(company_sso_id)
    except Unavailable as exc:
        log.warning("CDP notes API unavailable at preconditions (%s): the batches will retry", exc)
    except httpx.HTTPStatusError as exc:
        log.warning("CDP notes API count answered %s at preconditions", exc.response.status_code)


def count_migrated(thresholds: Thresholds, company_sso_id: str, retries: int | None = None) -> int:
    """The validation's count (PRD §9 #8), retried with backoff; raises Unavailable when it stays down."""
    writer = http_writer(thresholds)
    tries = max(1, retries if retries is not None else thresholds.cdp_api_count_retries)
    for attempt in range(1, tries + 1):
        try:
            return writer.count(company_sso_id)
        except (Unavailable, httpx.HTTPStatusError) as exc:
            if attempt == tries:
                raise Unavailable(f"count of company {company_sso_id}: {exc}") from None
            writer.sleep(min(2.0 * attempt, 8.0))
    raise AssertionError("unreachable")


def describe(thresholds: Thresholds) -> Mapping[str, str]:
    """What the status says about the writer and what validation could read on its path."""
    if not uses_http(thresholds):
        return {"writer": "mongo", "count_source": "contact_notes (cdp_mongo)", "content_source": "contact_notes"}
    return {
        "writer": "http",
        "count_source": f"GET {COUNT_PATH} (marker {MARKER})",
        "content_source": "contact_notes read through cdp_mongo (read-only): contact, owner, timestamps and the "
        "HTML as the service stored it after its own sanitising; the contract has no bulk read",
    }
