"""Attachment relinking (design step 5): CRM files → company-scoped CDP storage → `contact_notes.attachments`.

The pure half maps a note's source files to CDP attachment entries: type and
`file_type` by extension (CDP's fixed allowlist), the OQ-8 voice-note rule, size
cap, safe object keys and proxy URLs. The I/O half (`relink_page`, what the
AttachmentRelinkOperator calls) copies the files of one page with bounded
concurrency, streamed, with retries on transient S3 errors, then sets each
note's whole `attachments` array in one `$set`, in the same order every run, so
a re-run never duplicates an entry and copies only what is missing.

A file that cannot be copied never hides its note: the note gets an entry marked
unavailable (no URL), the file a reason code and the attachment-failed event.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from pymongo.database import Database

from notes_migration import cdp_store as store
from notes_migration import crm_source, metrics
from notes_migration import s3_store as s3
from notes_migration.codes import AttachmentOutcome, Event, Reason, State
from notes_migration.config import UUID_RE, RunConfig
from notes_migration.crm_source import FileRow
from notes_migration.events import event

log = logging.getLogger(__name__)
T = TypeVar("T")

# --------------------------------------------------------------------------- the CDP allowlist (contract)

IMAGE, VOICE_NOTE, AUDIO, DOCUMENT = "image", "voice_note", "audio", "document"
NOTE_AUDIO = "Crm::NoteAudio"
NOTE_IMAGE = "Crm::NoteImage"

MIME_TYPES: dict[str, str] = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "wav": "audio/wav",
    "webm": "audio/webm",
    "amr": "audio/amr",
    "pdf": "application/pdf",
    "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xls": "application/vnd.ms-excel",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv",
    "ppt": "application/vnd.ms-powerpoint",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "txt": "text/plain",
}
FAMILY: dict[str, str] = {
    **dict.fromkeys(("jpg", "jpeg", "png", "gif", "webp"), IMAGE),
    **dict.fromkeys(("mp3", "m4a", "aac", "ogg", "oga", "wav", "webm", "amr"), AUDIO),
    **dict.fromkeys(("pdf", "doc", "docx", "xls", "xlsx", "csv", "ppt", "pptx", "txt"), DOCUMENT),
}
# Content types the CRM may have declared that mean the same as our canonical one (not a correction).
MIME_ALIASES: dict[str, frozenset[str]] = {
    "image/jpeg": frozenset({"image/jpg", "image/pjpeg"}),
    "audio/mpeg": frozenset({"audio/mp3", "audio/mpeg3", "audio/x-mpeg"}),
    "audio/mp4": frozenset({"audio/x-m4a", "audio/m4a", "audio/aac-mp4"}),
    "audio/wav": frozenset({"audio/x-wav", "audio/wave", "audio/vnd.wave"}),
    "audio/aac": frozenset({"audio/x-aac"}),
    "audio/ogg": frozenset({"application/ogg", "audio/vorbis"}),
    "text/csv": frozenset({"text/comma-separated-values", "application/csv"}),
}
UNAVAILABLE_MESSAGE = "Attachment unavailable — could not be migrated"
MAX_NAME_CHARS = 255  # display name kept on the entry
MAX_KEY_NAME_CHARS = 100  # sanitised name inside the object key
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
SAFE_KEY_RE = re.compile(r"^[0-9a-fA-F-]{36}/notes/[0-9]+/(asset|document)-[0-9]+-[A-Za-z0-9_-]+(\.[a-z0-9]{1,10})?$")


def extension(name: str | None) -> str:
    """The lowercase extension of a file name ('' when none); only the last suffix counts."""
    base = re.split(r"[\\/]", (name or "").strip())[-1]
    stem, dot, ext = base.rpartition(".")
    return ext.strip().lower() if dot and stem.strip(". ") else ""


def display_name(name: str | None, fallback: str) -> str:
    """The name the CDP UI shows: the CRM name without path parts or control characters, bounded."""
    base = re.split(r"[\\/]", unicodedata.normalize("NFC", name or ""))[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    if not base or base in (".", ".."):
        return fallback
    if len(base) > MAX_NAME_CHARS:
        ext = extension(base)
        keep = MAX_NAME_CHARS - (len(ext) + 1 if ext else 0)
        base = base[:keep].rstrip() + (f".{ext}" if ext else "")
    return base


def safe_file_name(name: str | None, max_len: int = MAX_KEY_NAME_CHARS) -> str:
    """ASCII letters, digits, `-`, `_` and one `.` before the extension: no path, no `..`, bounded length."""
    base = re.split(r"[\\/]", name or "")[-1]
    ext = re.sub(r"[^a-z0-9]", "", extension(base))[:10]
    stem = base[: base.lower().rfind("." + extension(base))] if ext else base
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    safe = _UNSAFE.sub("-", ascii_stem).strip("-_")[: max(1, max_len - len(ext) - 1)].strip("-_") or "file"
    return f"{safe}.{ext}" if ext else safe


def object_key(company_sso_id: str, legacy_crm_note_id: int, kind: str, source_id: int, name: str | None) -> str:
    """`{company_sso_id}/notes/{legacy_crm_note_id}/{kind}-{source_id}-{safe name}`, whatever the CRM name holds."""
    if not UUID_RE.match(company_sso_id or ""):
        raise ValueError(f"company_sso_id {company_sso_id!r} is not a UUID")
    if kind not in ("asset", "document"):
        raise ValueError(f"unknown source kind {kind!r}")
    key = f"{company_sso_id.lower()}/notes/{int(legacy_crm_note_id)}/{kind}-{int(source_id)}-{safe_file_name(name)}"
    assert SAFE_KEY_RE.match(key), key
    return key


def proxy_url(base: str, key: str) -> str:
    """The URL the UI gets: CDP's file proxy, never an S3 or CRM URL."""
    return f"{base.rstrip('/')}/{quote(key, safe='/')}"


def declared_mime_differs(declared: str | None, canonical: str) -> bool:
    d = (declared or "").split(";")[0].strip().lower()
    return bool(d) and d != canonical and d not in MIME_ALIASES.get(canonical, frozenset())


# Content that must never be served under an allowlisted name, whatever the extension says.
_FORBIDDEN_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"MZ", "a Windows executable"),
    (0, b"\x7fELF", "an ELF executable"),
    (0, b"\xfe\xed\xfa\xce", "a Mach-O executable"),
    (0, b"\xfe\xed\xfa\xcf", "a Mach-O executable"),
    (0, b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (0, b"#!", "a script"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"hevm", b"mif1", b"msf1", b"avif")
_MARKUP = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?<(!doctype\s+html|html|script|svg|body|iframe)", re.IGNORECASE)


def forbidden_content(head: bytes, ext: str) -> str | None:
    """What the first bytes say the file really is, when that is outside the allowlist (None: fine)."""
    for offset, magic, what in _FORBIDDEN_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return what
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "a HEIF/AVIF image"
    if ext not in ("txt", "csv") and _MARKUP.match(head):
        return "HTML/SVG markup"
    return None


@dataclass(frozen=True)
class FilePlan:
    """What the relinker does with one source file of one migrated note (pure, from the CRM row)."""

    row: FileRow
    ref: str  # "asset-123" / "document-45": the file's identity, stored on its entry
    ext: str
    family: str | None  # image | audio | document; None outside the allowlist
    name: str
    key: str
    mime_type: str | None
    skip: Reason | None = None
    details: str = ""

    @property
    def file_type(self) -> str:
        return self.ext


def plan_note_files(
    company_sso_id: str, legacy_crm_note_id: int, rows: Iterable[FileRow], *, cap_bytes: int
) -> list[FilePlan]:
    """Every file of a note in a fixed order (assets, then documents, each by id), allowlist and cap applied."""
    plans = []
    for row in sorted(rows, key=lambda r: (r.kind != "asset", r.id)):
        raw_name = row.file_name or row.s3_key.rsplit("/", 1)[-1]
        ext = extension(raw_name)
        family = FAMILY.get(ext)
        ref = f"{row.kind}-{row.id}"
        plan = FilePlan(
            row=row,
            ref=ref,
            ext=ext,
            family=family,
            name=display_name(raw_name, safe_file_name(raw_name)),
            key=object_key(company_sso_id, legacy_crm_note_id, row.kind, row.id, raw_name),
            mime_type=MIME_TYPES.get(ext),
        )
        if family is None:
            plan = _skip(
                plan,
                Reason.ATTACHMENT_UNSUPPORTED_TYPE,
                f".{ext or '(none)'} is outside CDP's allowlist (declared {row.content_type or 'no content type'})",
            )
        elif row.size is not None and row.size > cap_bytes:
            plan = _skip(plan, Reason.ATTACHMENT_TOO_LARGE, f"declared {row.size} bytes > cap {cap_bytes}")
        plans.append(plan)
    return plans


def _skip(plan: FilePlan, reason: Reason, details: str) -> FilePlan:
    return FilePlan(**{**plan.__dict__, "skip": reason, "details": details})


@dataclass
class FileResult:
    """What became of one file in this run."""

    ref: str
    outcome: AttachmentOutcome
    reason: Reason | None = None
    details: str = ""
    size: int | None = None
    copied: bool = False
    source_missing: bool = False
    attempts: int = 0
    seconds: float = 0.0


def skipped_result(plan: FilePlan) -> FileResult:
    return FileResult(plan.ref, AttachmentOutcome.SKIPPED, plan.skip, plan.details)


def attachment_entries(plans: Sequence[FilePlan], results: Mapping[str, FileResult], proxy_base: str) -> list[dict]:
    """The note's migrated entries, in plan order. OQ-8: the first Crm::NoteAudio (by id) that is not
    skipped is the voice_note, every other audio is `audio`; a failed file gets an unavailable entry."""
    entries: list[dict] = []
    voice_taken = False
    for plan in plans:
        result = results.get(plan.ref)
        if result is None or result.outcome == AttachmentOutcome.SKIPPED:
            continue
        kind = plan.family
        if kind == AUDIO and plan.row.kind == "asset" and plan.row.asset_type == NOTE_AUDIO and not voice_taken:
            kind, voice_taken = VOICE_NOTE, True
        entry: dict[str, Any] = {
            "type": kind,
            "file_type": plan.file_type,
            "name": plan.name,
            "size": result.size if result.size is not None else plan.row.size,
            "mime_type": plan.mime_type,
        }
        if result.outcome == AttachmentOutcome.RELINKED:
            entry["url"] = proxy_url(proxy_base, plan.key)
        else:
            entry.update(
                unavailable=True,
                reason_code=result.reason.value if result.reason else None,
                message=UNAVAILABLE_MESSAGE,
            )
        entry["legacy_crm_file"] = plan.ref
        entries.append(entry)
    return entries


def merged_attachments(existing: Sequence[Mapping[str, Any]] | None, ours: list[dict]) -> list[dict]:
    """Our entries replace every earlier migrated entry; entries CDP users added themselves are kept after them."""
    foreign = [dict(e) for e in (existing or []) if isinstance(e, Mapping) and "legacy_crm_file" not in e]
    return ours + foreign


# --------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter on transient S3 errors only."""

    attempts: int = 4
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)

    def call(
        self,
        fn: Callable[[], T],
        counter: list[int] | None = None,
        transient: Callable[[BaseException], bool] = s3.is_transient,
    ) -> T:
        for attempt in range(1, self.attempts + 1):
            if counter is not None:
                counter[0] += 1
            try:
                return fn()
            except Exception as exc:
                if attempt == self.attempts or not transient(exc):
                    raise
                wait = self.delay(attempt)
                log.warning(
                    "transient S3 error (attempt %d/%d), retrying in %.2fs: %s",
                    attempt,
                    self.attempts,
                    wait,
                    _short(exc),
                )
                self.sleep(wait)
        raise AssertionError("unreachable")


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


# --------------------------------------------------------------------------- copying


def relink_file(
    plan: FilePlan,
    source: s3.Bucket,
    target: s3.Bucket,
    *,
    cap_bytes: int,
    retry: RetryPolicy,
    known: Mapping[str, s3.ObjectInfo] | None = None,
) -> FileResult:
    """Copy one file unless the target already holds it; never raises for a file-level problem.

    `known` is a listing of the target around this file's key (one LIST per page instead of a HEAD
    per file); without it the target is asked with a HEAD."""
    started = time.perf_counter()
    counter = [0]  # attempts of the current step (reset before each), reported with its outcome

    def done(outcome: AttachmentOutcome, reason: Reason | None = None, details: str = "", **kw: Any) -> FileResult:
        return FileResult(
            plan.ref, outcome, reason, details, attempts=counter[0], seconds=time.perf_counter() - started, **kw
        )

    if known is not None:
        present = known.get(plan.key)  # a listing has no content type: ours is set from the extension
    else:
        try:
            present = retry.call(lambda: s3.head(target, plan.key), counter)
        except Exception as exc:
            return done(
                AttachmentOutcome.FAILED,
                Reason.ATTACHMENT_UPLOAD_FAILED,
                f"cannot check the target after {counter[0]} attempts: {_short(exc)}",
            )
    if present is not None and present.content_type in (None, plan.mime_type):
        expected = plan.row.size
        if expected != present.size:  # the declared size may be stale or NULL: ask the source
            counter[0] = 0
            try:
                src = retry.call(lambda: s3.head(source, plan.row.s3_key), counter)
            except Exception as exc:
                return done(
                    AttachmentOutcome.FAILED,
                    Reason.ATTACHMENT_DOWNLOAD_FAILED,
                    f"after {counter[0]} attempts: {_short(exc)}",
                )
            expected = present.size if src is None else src.size  # source gone: the copy we hold is all there is
        if expected == present.size:
            return done(AttachmentOutcome.RELINKED, size=present.size)

    counter[0] = 0
    try:
        data = retry.call(lambda: s3.download(source, plan.row.s3_key, max_bytes=cap_bytes), counter)
    except s3.TooLarge as exc:
        return done(AttachmentOutcome.SKIPPED, Reason.ATTACHMENT_TOO_LARGE, str(exc), size=exc.size)
    except Exception as exc:
        missing = s3.is_not_found(exc)
        return done(
            AttachmentOutcome.FAILED,
            Reason.ATTACHMENT_DOWNLOAD_FAILED,
            ("source object missing: " if missing else f"after {counter[0]} attempts: ") + _short(exc),
            source_missing=missing,
        )
    try:
        what = forbidden_content(data.head, plan.ext)
        if what:
            return done(
                AttachmentOutcome.SKIPPED,
                Reason.ATTACHMENT_UNSUPPORTED_TYPE,
                f"content is {what} although the name says .{plan.ext}",
                size=data.size,
            )
        counter[0] = 0
        try:
            retry.call(lambda: s3.upload(target, plan.key, data, plan.mime_type or "application/octet-stream"), counter)
        except Exception as exc:
            return done(
                AttachmentOutcome.FAILED,
                Reason.ATTACHMENT_UPLOAD_FAILED,
                f"after {counter[0]} attempts: {_short(exc)}",
                size=data.size,
            )
        return done(AttachmentOutcome.RELINKED, size=data.size, copied=True)
    finally:
        data.close()


def copy_files(
    plans: Sequence[FilePlan],
    source: s3.Bucket,
    target: s3.Bucket,
    *,
    cap_bytes: int,
    concurrency: int,
    retry: RetryPolicy | None = None,
    known: Mapping[str, s3.ObjectInfo] | None = None,
) -> dict[str, FileResult]:
    """Relink every plan that is not skipped; at most `concurrency` files in flight (1: sequential)."""
    retry = retry or RetryPolicy()
    todo = [p for p in plans if p.skip is None]
    results = {p.ref: skipped_result(p) for p in plans if p.skip is not None}

    def one(plan: FilePlan) -> FileResult:
        return relink_file(plan, source, target, cap_bytes=cap_bytes, retry=retry, known=known)

    if concurrency <= 1 or len(todo) <= 1:
        results.update({p.ref: one(p) for p in todo})
    else:
        with ThreadPoolExecutor(max_workers=min(concurrency, len(todo)), thread_name_prefix="relink") as pool:
            for result in pool.map(one, todo):
                results[result.ref] = result
    return results


LISTING_LIMIT = 5000  # keys; above this a page asks the target file by file instead


def target_listing(target: s3.Bucket, company_sso_id: str, note_ids: Sequence[int]) -> dict[str, s3.ObjectInfo] | None:
    """What the target already holds for these notes, from one listing of the narrowest common key prefix
    (note ids of a page share their leading digits). None when that prefix is too broad or the LIST fails:
    the relinker then HEADs each file."""
    if not note_ids:
        return {}
    lo, hi = str(min(note_ids)), str(max(note_ids))
    common = ""
    if len(lo) == len(hi):
        for a, b in zip(lo, hi, strict=True):
            if a != b:
                break
            common += a
    if lo == hi:
        common = f"{lo}/"
    try:
        listing = s3.list_objects(target, f"{company_sso_id.lower()}/notes/{common}", limit=LISTING_LIMIT)
    except Exception as exc:
        log.warning("could not list the target (%s); checking files one by one", _short(exc))
        return None
    if listing is None:
        return None
    wanted = {f"{company_sso_id.lower()}/notes/{n}/" for n in note_ids}
    return {k: v for k, v in listing.items() if k[: k.rfind("/") + 1] in wanted}


# --------------------------------------------------------------------------- one page (the operator's call)


class RelinkSkipped(Exception):
    """Nothing to relink for this page (dry run, or the run halted): the task is skipped."""


def relink_page(
    crm,
    db: Database,
    job_id: str,
    page: Mapping[str, int],
    *,
    source: s3.Bucket,
    target: s3.Bucket,
    concurrency: int | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Relink the files of one page's migrated notes and record the page's attachment result.

    `concurrency` overrides the job's attachment_concurrency (files in flight at once)."""
    started = time.perf_counter()
    job = store.get_job(db, job_id)
    if job is None:
        raise LookupError(f"job {job_id} not found")
    cfg = RunConfig.from_dict(job["config"])
    if cfg.dry_run:
        raise RelinkSkipped(f"dry run: job {job_id} wrote no notes, nothing to relink")
    if job.get("state") == State.HALTED:
        raise RelinkSkipped(f"job {job_id} halted ({(job.get('halted') or {}).get('reason')}): no relinking")
    t = cfg.thresholds
    workers = concurrency or t.attachment_concurrency
    rows = crm_source.read_page_files(crm, cfg.cid, page["lo_id"], page["hi_id"])
    by_note: dict[int, list[FileRow]] = {}
    for row in rows:
        by_note.setdefault(row.note_id, []).append(row)
    notes = {
        d["legacy_crm_note_id"]: d
        for d in store.stored_notes(
            db, cfg.company_sso_id, sorted(by_note), {"_id": 1, "legacy_crm_note_id": 1, "attachments": 1}
        )
    }
    plans = {
        nid: plan_note_files(cfg.company_sso_id, nid, by_note[nid], cap_bytes=t.attachment_size_cap_bytes)
        for nid in sorted(notes)
    }
    t_read = time.perf_counter()

    flat = [p for ps in plans.values() for p in ps]
    known = target_listing(target, cfg.company_sso_id, sorted(plans)) if flat else None
    results = copy_files(
        flat, source, target, cap_bytes=t.attachment_size_cap_bytes, concurrency=workers, retry=retry, known=known
    )
    t_copy = time.perf_counter()

    updates, entries, events_out = [], [], []
    for nid, note_plans in plans.items():
        attachments = merged_attachments(
            notes[nid].get("attachments"), attachment_entries(note_plans, results, t.proxy_url_base)
        )
        if attachments != list(notes[nid].get("attachments") or []):
            updates.append((notes[nid]["_id"], attachments))
        for plan in note_plans:
            r = results[plan.ref]
            if r.outcome == AttachmentOutcome.RELINKED:
                continue
            entries.append(_log_entry(job, nid, plan, r))
            if r.outcome == AttachmentOutcome.FAILED:
                events_out.append(
                    event(
                        Event.ATTACHMENT_FAILED,
                        job_id=job_id,
                        cid=cfg.cid,
                        subject=f"{nid}:{plan.ref}",
                        legacy_crm_note_id=nid,
                        file=plan.ref,
                        file_name=plan.name,
                        key=plan.key,
                        reason_code=r.reason.value if r.reason else None,
                        attempts=r.attempts,
                        details=r.details,
                    )
                )
    store.set_note_attachments(db, updates)
    store.replace_attachment_log(db, job_id, sorted(notes), entries)
    store.record_events(db, events_out)

    page_doc = page_result(
        job,
        page,
        plans,
        results,
        rows_total=len(rows),
        notes_updated=len(updates),
        concurrency=workers,
        timings={
            "read": t_read - started,
            "copy": t_copy - t_read,
            "write": time.perf_counter() - t_copy,
            "total": time.perf_counter() - started,
        },
    )
    store.save_attachment_page(db, page_doc)
    metrics.attachment_page_completed(page_doc)
    store.heartbeat_lock(db, cfg.cid, job["run_id"])
    summarise_job(db, job_id)  # live figures; validate recomputes them once every page is done
    log.info(
        "page %s: %d files, %d relinked (%d copied), %d failed, %d skipped, %d notes updated in %.2fs",
        page["page_no"],
        page_doc["files"],
        page_doc["relinked"],
        page_doc["copied"],
        page_doc["failed"],
        page_doc["skipped"],
        len(updates),
        page_doc["timings_s"]["total"],
    )
    return {
        k: page_doc[k]
        for k in ("page_no", "files", "relinked", "copied", "reused", "failed", "skipped", "notes_updated")
    }


def _log_entry(job: Mapping[str, Any], note_id: int, plan: FilePlan, r: FileResult) -> dict[str, Any]:
    """A reason-coded per-file record in the note log (outcome attachment_failed / attachment_skipped)."""
    return {
        "_id": f"{job['_id']}:{note_id}:{plan.ref}",
        "job_id": job["_id"],
        "cid": job["cid"],
        "legacy_crm_note_id": note_id,
        "outcome": r.outcome.value,
        "reason_code": r.reason.value if r.reason else None,
        "details": r.details,
        "file": {
            "ref": plan.ref,
            "name": plan.name,
            "key": plan.key,
            "s3_key": plan.row.s3_key,
            "size": r.size if r.size is not None else plan.row.size,
            "attempts": r.attempts,
        },
        "created_at": store.now(),
    }


def page_result(
    job: Mapping[str, Any],
    page: Mapping[str, int],
    plans: Mapping[int, list[FilePlan]],
    results: Mapping[str, FileResult],
    *,
    rows_total: int,
    notes_updated: int,
    concurrency: int,
    timings: Mapping[str, float],
) -> dict[str, Any]:
    """The page's attachment counters: one document per (job, page), replaced whole on a retry."""
    flat = [(p, results[p.ref]) for ps in plans.values() for p in ps]
    failed = Counter(r.reason.value for _, r in flat if r.outcome == AttachmentOutcome.FAILED and r.reason)
    skipped = Counter(r.reason.value for _, r in flat if r.outcome == AttachmentOutcome.SKIPPED and r.reason)
    relinked = [r for _, r in flat if r.outcome == AttachmentOutcome.RELINKED]
    return {
        "_id": f"{job['_id']}:{page['page_no']}",
        "job_id": job["_id"],
        "cid": job["cid"],
        "page_no": page["page_no"],
        "lo_id": page["lo_id"],
        "hi_id": page["hi_id"],
        "notes_with_files": len(plans),
        "notes_updated": notes_updated,
        "files_without_cdp_note": rows_total - len(flat),
        "files": len(flat),
        "relinked": len(relinked),
        "copied": sum(1 for r in relinked if r.copied),
        "reused": sum(1 for r in relinked if not r.copied),
        "bytes_copied": sum(r.size or 0 for r in relinked if r.copied),
        "failed": sum(failed.values()),
        "failed_by_reason": dict(failed),
        "skipped": sum(skipped.values()),
        "skipped_by_reason": dict(skipped),
        "source_missing": sum(1 for _, r in flat if r.source_missing),
        "content_type_corrected": sum(
            1
            for p, r in flat
            if r.outcome == AttachmentOutcome.RELINKED
            and p.mime_type
            and declared_mime_differs(p.row.content_type, p.mime_type)
        ),
        "file_ms": sorted(
            round(r.seconds * 1000) for _, r in flat if r.outcome != AttachmentOutcome.SKIPPED or r.attempts
        ),
        "concurrency": concurrency,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "finished_at": store.now(),
    }


# --------------------------------------------------------------------------- job figures


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (P95 of per-file times)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def job_figures(pages: Iterable[Mapping[str, Any]], *, gate: float, pages_total: int | None = None) -> dict[str, Any]:
    """Pure: the job's attachment figures summed over its page results (the status and the alert read them).

    success_rate = relinked / files tried (allowlisted, under the cap); the Stage-1 gate reads
    success_rate_where_source_exists, which leaves out files whose source object is missing;
    failure_share = failed / files tried (> attachment_alert_share → Slack)."""
    keys = (
        "files",
        "relinked",
        "copied",
        "reused",
        "bytes_copied",
        "failed",
        "skipped",
        "source_missing",
        "content_type_corrected",
        "notes_with_files",
        "notes_updated",
    )
    sums: dict[str, int] = dict.fromkeys(keys, 0)
    failed_by: Counter[str] = Counter()
    skipped_by: Counter[str] = Counter()
    ms: list[int] = []
    n_pages = 0
    for page in pages:
        n_pages += 1
        for k in keys:
            sums[k] += int(page.get(k) or 0)
        failed_by.update(page.get("failed_by_reason") or {})
        skipped_by.update(page.get("skipped_by_reason") or {})
        ms.extend(page.get("file_ms") or [])
    tried = sums["files"] - sums["skipped"]
    with_source = tried - sums["source_missing"]
    where_source = sums["relinked"] / with_source if with_source else 1.0
    p95 = percentile(ms, 95)
    return {
        "total": sums["files"],
        "relinked": sums["relinked"],
        "copied": sums["copied"],
        "reused": sums["reused"],
        "failed": sums["failed"],
        "failed_by_reason": dict(failed_by),
        "skipped": sums["skipped"],
        "skipped_by_reason": dict(skipped_by),
        "source_missing": sums["source_missing"],
        "content_type_corrected": sums["content_type_corrected"],
        "bytes_copied": sums["bytes_copied"],
        "notes_with_files": sums["notes_with_files"],
        "notes_updated": sums["notes_updated"],
        "success_rate": round(sums["relinked"] / tried, 6) if tried else 1.0,
        "success_rate_where_source_exists": round(where_source, 6),
        "failure_share": round(sums["failed"] / tried, 6) if tried else 0.0,
        "gate": gate,
        "gate_met": where_source >= gate,
        "p95_file_seconds": round(p95 / 1000, 3) if p95 is not None else None,
        "pages_done": n_pages,
        "pages_total": pages_total,
    }


def summarise_job(db: Database, job_id: str) -> dict[str, Any] | None:
    """Write the job's attachment figures from its page results; None (nothing written) when no page relinked."""
    pages = store.attachment_page_results(db, job_id)
    if not pages:
        return None
    job = store.get_job(db, job_id) or {}
    gate = RunConfig.from_dict(job["config"]).thresholds.attachment_relink_gate if job.get("config") else 0.95
    figures = job_figures(pages, gate=gate, pages_total=job.get("pages_total"))
    store.update_job(db, job_id, attachments=figures)
    return figures
