"""The row types read from the CRM and the page descriptors that travel through XCom (pure data, no I/O)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from notes_migration.domain.config import ACTIVITY_TYPE_NAMES


@dataclass(frozen=True)
class NoteRow:
    id: int
    organization_id: int
    type: str | None
    note: str | None
    crm_person_id: int
    crm_company_id: int | None
    crm_deal_id: int | None
    crm_ticket_id: int | None
    creator_id: int | None
    creator_found: bool
    creator_name: str | None
    creator_email: str | None
    note_type_name: str | None
    has_checkin: bool
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def is_activity(self) -> bool:
        return self.note_type_name in ACTIVITY_TYPE_NAMES


@dataclass(frozen=True)
class Page:
    """A keyset range of one CID's Person notes: small enough for XCom."""

    page_no: int
    lo_id: int
    hi_id: int
    size: int

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in BATCH_FIELDS}

    def packed(self) -> list[int]:
        """The four ints as a task page lists its batches (pages.group_batches; batches_of reads them back)."""
        return [getattr(self, k) for k in BATCH_FIELDS]


BATCH_FIELDS = ("page_no", "lo_id", "hi_id", "size")


def batches_of(task_page: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The insert batches of a task page, in id order: the page itself when it is one batch, else its
    `batches` ([page_no, lo_id, hi_id, size] each, as pages.group_batches packs them)."""
    packed = task_page.get("batches")
    if not packed:
        return [{k: v for k, v in task_page.items() if k in BATCH_FIELDS}]  # not its whole_cid mark
    return [dict(zip(BATCH_FIELDS, (int(v) for v in b), strict=True)) for b in packed]


@dataclass(frozen=True)
class FileRow:
    """One source file of a note: an `assets` row (images, audios) or a `crm_note_attachments` row (documents)."""

    kind: str  # "asset" | "document"
    id: int
    note_id: int
    asset_type: str | None  # 'Crm::NoteImage' | 'Crm::NoteAudio' for assets, None for documents
    file_name: str | None
    content_type: str | None
    size: int | None  # file_file_size as declared by the CRM
    s3_key: str
