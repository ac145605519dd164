"""Attachment planning, pure: a note's CRM files → CDP attachment entries (design step 5).

Type and `file_type` by extension (CDP's fixed allowlist), the OQ-8 voice-note
rule, the size cap, safe object keys under `{company_sso_id}/notes/…`, proxy URLs,
and the entries a note gets from this run's results (a failed file becomes an
entry marked unavailable: it never hides its note).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from notes_migration.domain.codes import AttachmentOutcome, Reason
from notes_migration.domain.config import UUID_RE
from notes_migration.domain.rows import FileRow

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


def notes_prefix(company_sso_id: str, legacy_crm_note_id: int | str = "") -> str:
    """The one owner of a company's object prefix in CDP storage: `{company}/notes/[{legacy id}/]`.

    CDP documents keep `company_sso_id` as the run was given it (CDP's own id, matched as CDP stores it); storage
    keys use its canonical lower-case form, so every writer, lister and deleter must build keys here (a rollback
    that deleted under the given case once left every file of an upper-case company behind)."""
    if not UUID_RE.fullmatch(company_sso_id or ""):
        raise ValueError(f"company_sso_id {company_sso_id!r} is not a UUID")
    note = f"{int(legacy_crm_note_id)}/" if legacy_crm_note_id != "" else ""
    return f"{company_sso_id.lower()}/notes/{note}"


def object_key(company_sso_id: str, legacy_crm_note_id: int, kind: str, source_id: int, name: str | None) -> str:
    """`{company_sso_id}/notes/{legacy_crm_note_id}/{kind}-{source_id}-{safe name}`, whatever the CRM name holds."""
    if kind not in ("asset", "document"):
        raise ValueError(f"unknown source kind {kind!r}")
    key = f"{notes_prefix(company_sso_id, legacy_crm_note_id)}{kind}-{int(source_id)}-{safe_file_name(name)}"
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
