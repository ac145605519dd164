"""Reads of the legacy CRM PostgreSQL (read-only). All SQL of the project lives here.

Timestamps are `timestamp without time zone` holding UTC wall-clock; psycopg2
returns them naive and `_utc` pins them to UTC, whatever the session or host
time zone, so nothing here depends on `TimeZone`.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from notes_migration.domain.codes import Halted, Reason
from notes_migration.domain.config import ACTIVITY_TYPE_NAMES
from notes_migration.domain.rows import FileRow, NoteRow, Page

log = logging.getLogger(__name__)
T = TypeVar("T")

# A Person note is any crm_notes row with crm_person_id set (D-6), whatever its
# STI type or other foreign keys.
_PERSON_NOTES = "n.organization_id = %(cid)s AND n.crm_person_id IS NOT NULL"
_ACTIVITY = "COALESCE(t.name = ANY(%(activity_names)s), false)"
_TYPE_JOIN = "LEFT JOIN crm_note_types t ON t.id = n.crm_note_type_id"


# --------------------------------------------------------------------------- retries (PRD §9 #2)


class CrmExtractFailed(Halted):
    """The CRM kept failing (connection error or time-out) after every retry: the run halts."""

    def __init__(self, message: str):
        super().__init__(Reason.CRM_EXTRACT_FAILED, message)


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Connection errors and time-outs (psycopg's QueryCanceled is an OperationalError) of either driver."""
    out: list[type[BaseException]] = []
    try:
        import psycopg

        out += [psycopg.OperationalError, psycopg.InterfaceError]
    except ImportError:  # pragma: no cover - the provider brings one of the two drivers
        pass
    try:
        import psycopg2

        out += [psycopg2.OperationalError, psycopg2.InterfaceError]
    except ImportError:
        pass
    return tuple(out)


_SECRETISH = re.compile(r"(password|passwd|pwd)\s*=\s*\S+", re.IGNORECASE)


def _short(exc: BaseException) -> str:
    """One line of the driver's message, with anything shaped like a password removed."""
    text = " ".join(str(exc).split())[:300]
    masked = _SECRETISH.sub(r"\1=***", text)
    return f"{type(exc).__name__}: {masked}"


class CrmSession:
    """A CRM connection opened lazily and reopened after a connection error or a time-out.

    Every read of this module given a session runs through `call`: it is retried
    `retries` times with exponential backoff (backoff_seconds × 1, 2, 4 …) on a fresh
    connection, then raises CrmExtractFailed, so a page, the coverage step, the plan
    and validation all get the same policy."""

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        retries: int = 3,
        backoff_seconds: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._connect = connect
        self._conn: Any = None
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._sleep = sleep
        self.transient = _transient_errors()
        self.attempts_failed = 0

    def connection(self) -> Any:
        if self._conn is None or getattr(self._conn, "closed", False):
            self._conn = self._connect()
        return self._conn

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """For callers outside this module (no retry there)."""
        return self.connection().cursor(*args, **kwargs)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # a broken connection may refuse to close; it is dropped anyway
                log.debug("closing a broken CRM connection: %s", _short(exc))

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        for attempt in range(self.retries + 1):
            try:
                return fn(self.connection(), *args, **kwargs)
            except self.transient as exc:
                self.close()
                self.attempts_failed += 1
                if attempt == self.retries:
                    raise CrmExtractFailed(
                        f"{fn.__name__} failed {attempt + 1} times ({self.retries} retries with backoff): {_short(exc)}"
                    ) from None
                delay = self.backoff_seconds * 2**attempt
                log.warning(
                    "CRM read %s failed (attempt %d/%d), retrying in %.2fs: %s",
                    fn.__name__,
                    attempt + 1,
                    self.retries + 1,
                    delay,
                    _short(exc),
                )
                self._sleep(delay)
        raise AssertionError("unreachable")


def _retried(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a read through the session's retry policy when given a CrmSession (a plain connection: as is)."""

    @functools.wraps(fn)
    def wrapper(conn: Any, *args: Any, **kwargs: Any) -> T:
        if isinstance(conn, CrmSession):
            return conn.call(fn, *args, **kwargs)
        return fn(conn, *args, **kwargs)

    return wrapper


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _params(cid: int, **extra: Any) -> dict[str, Any]:
    return {"cid": cid, "activity_names": sorted(ACTIVITY_TYPE_NAMES), **extra}


@_retried
def cid_exists(conn, cid: int) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM organizations WHERE id = %s", (cid,))
        return cur.fetchone() is not None


@_retried
def scope_counts(conn, cid: int) -> dict[str, int]:
    """How the CID's notes divide into Person notes, activities and notes without a person."""
    sql = f"""
        SELECT count(*) FILTER (WHERE n.crm_person_id IS NOT NULL AND NOT {_ACTIVITY}),
               count(*) FILTER (WHERE n.crm_person_id IS NOT NULL AND {_ACTIVITY}),
               count(*) FILTER (WHERE n.crm_person_id IS NULL),
               count(*)
          FROM crm_notes n {_TYPE_JOIN}
         WHERE n.organization_id = %(cid)s"""
    with conn.cursor() as cur:
        cur.execute(sql, _params(cid))
        notes, activities, no_person, total = cur.fetchone()
    return {"person_notes": notes, "person_activities": activities, "no_person": no_person, "total": total}


@_retried
def notes_per_person(conn, cid: int, include_activities: bool) -> dict[int, int]:
    """In-scope note counts by crm_person_id: the input of the coverage preflight."""
    activity_filter = "" if include_activities else f"AND NOT {_ACTIVITY}"
    sql = f"""
        SELECT n.crm_person_id, count(*)
          FROM crm_notes n {_TYPE_JOIN}
         WHERE {_PERSON_NOTES} {activity_filter}
         GROUP BY n.crm_person_id"""
    with conn.cursor() as cur:
        cur.execute(sql, _params(cid))
        return dict(cur.fetchall())


@_retried
def plan_pages(conn, cid: int, batch_size: int) -> list[Page]:
    """Keyset id ranges over all Person notes of the CID, each holding ≤ batch_size rows.

    Activities are inside the ranges on purpose: each is then skipped with its
    own reason code instead of vanishing in a WHERE clause.
    """
    sql = f"""
        SELECT bucket, min(id), max(id), count(*)
          FROM (SELECT n.id, (row_number() OVER (ORDER BY n.id) - 1) / %(batch)s AS bucket
                  FROM crm_notes n WHERE {_PERSON_NOTES}) numbered
         GROUP BY bucket ORDER BY bucket"""
    with conn.cursor() as cur:
        cur.execute(sql, _params(cid, batch=batch_size))
        return [Page(page_no=int(b), lo_id=lo, hi_id=hi, size=n) for b, lo, hi, n in cur.fetchall()]


_NOTE_COLUMNS = """
    n.id, n.organization_id, n.type, n.note, n.crm_person_id, n.crm_company_id,
    n.crm_deal_id, n.crm_ticket_id, n.creator_id, u.id IS NOT NULL, u.full_name, u.email,
    t.name, EXISTS (SELECT 1 FROM crm_checkins c WHERE c.crm_note_id = n.id),
    n.created_at, n.updated_at"""


@_retried
def read_page(conn, cid: int, lo_id: int, hi_id: int) -> list[NoteRow]:
    """One query for a page: notes with their creator, type name and check-in flag."""
    sql = f"""
        SELECT {_NOTE_COLUMNS}
          FROM crm_notes n
          LEFT JOIN users u ON u.id = n.creator_id
          {_TYPE_JOIN}
         WHERE {_PERSON_NOTES} AND n.id BETWEEN %(lo)s AND %(hi)s
         ORDER BY n.id"""
    with conn.cursor() as cur:
        cur.execute(sql, _params(cid, lo=lo_id, hi=hi_id))
        return [_row(r) for r in cur.fetchall()]


@_retried
def read_notes(conn, cid: int, note_ids: Sequence[int]) -> list[NoteRow]:
    """The CID's Person notes with these ids, as read_page reads them (a failed-record retry reads only these)."""
    sql = f"""
        SELECT {_NOTE_COLUMNS}
          FROM crm_notes n
          LEFT JOIN users u ON u.id = n.creator_id
          {_TYPE_JOIN}
         WHERE {_PERSON_NOTES} AND n.id = ANY(%(ids)s)
         ORDER BY n.id"""
    with conn.cursor() as cur:
        cur.execute(sql, _params(cid, ids=sorted(int(i) for i in note_ids)))
        return [_row(r) for r in cur.fetchall()]


def _row(r: Sequence[Any]) -> NoteRow:
    return NoteRow(*r[:14], created_at=_utc(r[14]), updated_at=_utc(r[15]))  # type: ignore[misc]  # 14 fields first


def iter_pages(conn, cid: int, batch_size: int) -> Iterator[list[NoteRow]]:
    """All Person notes of a CID, page by page (validation re-reads the source this way)."""
    for page in plan_pages(conn, cid, batch_size):
        yield read_page(conn, cid, page.lo_id, page.hi_id)


# --------------------------------------------------------------------------- files of a page (attachment relink)


@_retried
def read_page_files(conn, cid: int, lo_id: int, hi_id: int) -> list[FileRow]:
    """Every asset and document of the page's Person notes, in one query, ordered by (note, kind, id)."""
    sql = f"""
        SELECT 'asset', a.id, a.assetable_id, a.type, a.file_file_name, a.file_content_type, a.file_file_size, a.s3_key
          FROM assets a JOIN crm_notes n ON n.id = a.assetable_id
         WHERE a.assetable_type = 'Crm::Note' AND {_PERSON_NOTES} AND n.id BETWEEN %(lo)s AND %(hi)s
        UNION ALL
        SELECT 'document', d.id, d.crm_note_id, NULL, d.file_file_name, d.file_content_type, d.file_file_size, d.s3_key
          FROM crm_note_attachments d JOIN crm_notes n ON n.id = d.crm_note_id
         WHERE {_PERSON_NOTES} AND n.id BETWEEN %(lo)s AND %(hi)s
         ORDER BY 3, 1, 2"""
    with conn.cursor() as cur:
        cur.execute(sql, _params(cid, lo=lo_id, hi=hi_id))
        return [FileRow(*r) for r in cur.fetchall()]


# --------------------------------------------------------------------------- the sign-off sample (ops/signoff.py)

_IN_SCOPE = f"{_PERSON_NOTES} AND NOT {_ACTIVITY}"


@_retried
def sample_candidates(conn, cid: int, per_kind: int = 3) -> dict[str, list[int]]:
    """Ids of the CID's in-scope notes worth a person's look: the oldest and newest by `created_at`, notes with
    mention markup, notes with images, audios and documents, and notes without a person (a few of each, lowest
    ids first)."""
    queries = {
        "oldest note": f"SELECT n.id FROM crm_notes n {_TYPE_JOIN} WHERE {_IN_SCOPE} ORDER BY n.created_at, n.id LIMIT 1",
        "newest note": f"SELECT n.id FROM crm_notes n {_TYPE_JOIN} WHERE {_IN_SCOPE} "
        "ORDER BY n.created_at DESC, n.id DESC LIMIT 1",
        "mention": f"SELECT n.id FROM crm_notes n {_TYPE_JOIN} WHERE {_IN_SCOPE} AND n.note LIKE '%%data-user-id%%' "
        "ORDER BY n.id LIMIT %(k)s",
        "image": f"SELECT DISTINCT n.id FROM crm_notes n {_TYPE_JOIN} JOIN assets a ON a.assetable_type = "
        f"'Crm::Note' AND a.assetable_id = n.id AND a.type = 'Crm::NoteImage' WHERE {_IN_SCOPE} ORDER BY n.id "
        "LIMIT %(k)s",
        "audio / voice note": f"SELECT DISTINCT n.id FROM crm_notes n {_TYPE_JOIN} JOIN assets a ON "
        f"a.assetable_type = 'Crm::Note' AND a.assetable_id = n.id AND a.type = 'Crm::NoteAudio' WHERE {_IN_SCOPE} "
        "ORDER BY n.id LIMIT %(k)s",
        "document": f"SELECT DISTINCT n.id FROM crm_notes n {_TYPE_JOIN} JOIN crm_note_attachments d ON "
        f"d.crm_note_id = n.id WHERE {_IN_SCOPE} ORDER BY n.id LIMIT %(k)s",
        # counted by the run (NOT_A_PERSON_NOTE), never logged one by one
        "not a person note": "SELECT n.id FROM crm_notes n WHERE n.organization_id = %(cid)s "
        "AND n.crm_person_id IS NULL ORDER BY n.id LIMIT %(k)s",
    }
    out: dict[str, list[int]] = {}
    with conn.cursor() as cur:
        for name, sql in queries.items():
            cur.execute(sql, _params(cid, k=per_kind))
            out[name] = [int(r[0]) for r in cur.fetchall()]
    return out


@_retried
def in_scope_note_ids(conn, cid: int) -> list[int]:
    """Every in-scope note id of the CID (the random draw's population; ints only, 100,000 of them are ~1 MB)."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT n.id FROM crm_notes n {_TYPE_JOIN} WHERE {_IN_SCOPE} ORDER BY n.id", _params(cid))
        return [int(r[0]) for r in cur.fetchall()]


@_retried
def read_any_notes(conn, cid: int, note_ids: Sequence[int]) -> list[NoteRow]:
    """The CID's notes with these ids, whatever their scope (a sign-off also shows skipped notes)."""
    sql = f"""
        SELECT {_NOTE_COLUMNS}
          FROM crm_notes n
          LEFT JOIN users u ON u.id = n.creator_id
          {_TYPE_JOIN}
         WHERE n.organization_id = %(cid)s AND n.id = ANY(%(ids)s)
         ORDER BY n.id"""
    with conn.cursor() as cur:
        cur.execute(sql, _params(cid, ids=sorted(int(i) for i in note_ids)))
        return [_row(r) for r in cur.fetchall()]


@_retried
def read_note_files(conn, cid: int, note_ids: Sequence[int]) -> list[FileRow]:
    """Every asset and document of these notes of the CID, ordered by (note, kind, id)."""
    sql = """
        SELECT 'asset', a.id, a.assetable_id, a.type, a.file_file_name, a.file_content_type, a.file_file_size, a.s3_key
          FROM assets a JOIN crm_notes n ON n.id = a.assetable_id
         WHERE a.assetable_type = 'Crm::Note' AND n.organization_id = %(cid)s AND n.id = ANY(%(ids)s)
        UNION ALL
        SELECT 'document', d.id, d.crm_note_id, NULL, d.file_file_name, d.file_content_type, d.file_file_size, d.s3_key
          FROM crm_note_attachments d JOIN crm_notes n ON n.id = d.crm_note_id
         WHERE n.organization_id = %(cid)s AND n.id = ANY(%(ids)s)
         ORDER BY 3, 1, 2"""
    with conn.cursor() as cur:
        cur.execute(sql, _params(cid, ids=sorted(int(i) for i in note_ids)))
        return [FileRow(*r) for r in cur.fetchall()]
