"""The copy engine of attachment relinking: CRM bucket → CDP bucket, streamed, with bounded
concurrency and retries on transient S3 errors; an object already in the target with the
same size is not copied again. Never raises for a file-level problem: each file gets a
FileResult with a reason code.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from notes_migration.domain.attachment_plan import FilePlan, FileResult, forbidden_content, notes_prefix, skipped_result
from notes_migration.domain.codes import AttachmentOutcome, Reason
from notes_migration.stores import s3_store as s3

log = logging.getLogger(__name__)
T = TypeVar("T")

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


class _Attempt:
    """One file's relink: its steps' attempt counter (reset before each step) and the result it ends with."""

    def __init__(self, plan: FilePlan) -> None:
        self.plan, self.started, self.counter = plan, time.perf_counter(), [0]

    def step(self) -> list[int]:
        self.counter[0] = 0
        return self.counter

    def done(
        self, outcome: AttachmentOutcome, reason: Reason | None = None, details: str = "", **kw: Any
    ) -> FileResult:
        seconds = time.perf_counter() - self.started
        return FileResult(self.plan.ref, outcome, reason, details, attempts=self.counter[0], seconds=seconds, **kw)


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
    attempt = _Attempt(plan)
    held = _already_there(attempt, source, target, retry, known)
    return held if held is not None else _copy(attempt, source, target, cap_bytes, retry)


def _already_there(
    attempt: _Attempt,
    source: s3.Bucket,
    target: s3.Bucket,
    retry: RetryPolicy,
    known: Mapping[str, s3.ObjectInfo] | None,
) -> FileResult | None:
    """RELINKED when the target holds the file at the size the source has (a failed check is a result too);
    None when it must be copied."""
    plan = attempt.plan
    if known is not None:
        present = known.get(plan.key)  # a listing has no content type: ours is set from the extension
    else:
        try:
            present = retry.call(lambda: s3.head(target, plan.key), attempt.step())
        except Exception as exc:
            why = f"cannot check the target after {attempt.counter[0]} attempts: {_short(exc)}"
            return attempt.done(AttachmentOutcome.FAILED, Reason.ATTACHMENT_UPLOAD_FAILED, why)
    if present is None or present.content_type not in (None, plan.mime_type):
        return None
    expected = plan.row.size
    if expected != present.size:  # the declared size may be stale or NULL: ask the source
        try:
            src = retry.call(lambda: s3.head(source, plan.row.s3_key), attempt.step())
        except Exception as exc:
            why = f"after {attempt.counter[0]} attempts: {_short(exc)}"
            return attempt.done(AttachmentOutcome.FAILED, Reason.ATTACHMENT_DOWNLOAD_FAILED, why)
        expected = present.size if src is None else src.size  # source gone: the copy we hold is all there is
    return attempt.done(AttachmentOutcome.RELINKED, size=present.size) if expected == present.size else None


def _copy(attempt: _Attempt, source: s3.Bucket, target: s3.Bucket, cap_bytes: int, retry: RetryPolicy) -> FileResult:
    """Download (capped), check the bytes against the name, upload: each step retried, each failure a result."""
    plan = attempt.plan
    try:
        data = retry.call(lambda: s3.download(source, plan.row.s3_key, max_bytes=cap_bytes), attempt.step())
    except s3.TooLarge as exc:
        return attempt.done(AttachmentOutcome.SKIPPED, Reason.ATTACHMENT_TOO_LARGE, str(exc), size=exc.size)
    except Exception as exc:
        missing = s3.is_not_found(exc)
        why = ("source object missing: " if missing else f"after {attempt.counter[0]} attempts: ") + _short(exc)
        return attempt.done(AttachmentOutcome.FAILED, Reason.ATTACHMENT_DOWNLOAD_FAILED, why, source_missing=missing)
    try:
        what = forbidden_content(data.head, plan.ext)
        if what:
            why = f"content is {what} although the name says .{plan.ext}"
            return attempt.done(AttachmentOutcome.SKIPPED, Reason.ATTACHMENT_UNSUPPORTED_TYPE, why, size=data.size)
        mime = plan.mime_type or "application/octet-stream"
        try:
            retry.call(lambda: s3.upload(target, plan.key, data, mime), attempt.step())
        except Exception as exc:
            why = f"after {attempt.counter[0]} attempts: {_short(exc)}"
            return attempt.done(AttachmentOutcome.FAILED, Reason.ATTACHMENT_UPLOAD_FAILED, why, size=data.size)
        return attempt.done(AttachmentOutcome.RELINKED, size=data.size, copied=True)
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
        listing = s3.list_objects(target, notes_prefix(company_sso_id) + common, limit=LISTING_LIMIT)
    except Exception as exc:
        log.warning("could not list the target (%s); checking files one by one", _short(exc))
        return None
    if listing is None:
        return None
    wanted = {notes_prefix(company_sso_id, n) for n in note_ids}
    return {k: v for k, v in listing.items() if k[: k.rfind("/") + 1] in wanted}
