"""Pure attachment mapping: allowlist, OQ-8 voice-note rule, size cap, safe keys, proxy URLs, figures, retries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools import seed_files
from notes_migration.domain.accounting import attachment_figures, percentile
from notes_migration.domain.attachment_plan import (
    SAFE_KEY_RE,
    UNAVAILABLE_MESSAGE,
    FileResult,
    attachment_entries,
    declared_mime_differs,
    display_name,
    extension,
    forbidden_content,
    merged_attachments,
    object_key,
    plan_note_files,
    proxy_url,
    safe_file_name,
)
from notes_migration.domain.codes import AttachmentOutcome, Reason
from notes_migration.domain.rows import FileRow
from notes_migration.run.copy_engine import RetryPolicy

COMPANY = "0b7d3c1e-5a4f-4e8b-9c2d-6e7f8a9b0c1d"
CAP = 25 * 1024 * 1024
BASE = "https://cdp.example/api/v1/files"


def asset(
    i: int, name: str | None, kind: str = "Crm::NoteImage", size: int | None = 1000, s3_key: str | None = None
) -> FileRow:
    return FileRow("asset", i, 77, kind, name, "application/octet-stream", size, s3_key or f"crm/1/assets/{i}/{name}")


def doc(i: int, name: str | None, size: int | None = 1000) -> FileRow:
    return FileRow("document", i, 77, None, name, "application/pdf", size, f"crm/1/documents/{i}/{name}")


def relinked(plans, size: int = 10) -> dict[str, FileResult]:
    return {
        p.ref: FileResult(p.ref, AttachmentOutcome.RELINKED, size=size)
        if p.skip is None
        else FileResult(p.ref, AttachmentOutcome.SKIPPED, p.skip)
        for p in plans
    }


@pytest.mark.parametrize(
    "name, family, file_type, mime",
    [
        ("photo.jpg", "image", "jpg", "image/jpeg"),
        ("Whiteboard.PNG", "image", "png", "image/png"),
        ("x.JPEG", "image", "jpeg", "image/jpeg"),
        ("a.gif", "image", "gif", "image/gif"),
        ("site.webp", "image", "webp", "image/webp"),
        ("voice.m4a", "audio", "m4a", "audio/mp4"),
        ("memo.mp3", "audio", "mp3", "audio/mpeg"),
        ("call.ogg", "audio", "ogg", "audio/ogg"),
        ("rec.amr", "audio", "amr", "audio/amr"),
        ("quote.pdf", "document", "pdf", "application/pdf"),
        ("old.doc", "document", "doc", "application/msword"),
        (
            "contract.docx",
            "document",
            "docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        ("prices.xls", "document", "xls", "application/vnd.ms-excel"),
        ("prices.xlsx", "document", "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        ("deck.pptx", "document", "pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
        ("notes.txt", "document", "txt", "text/plain"),
        ("list.CSV", "document", "csv", "text/csv"),
    ],
)
def test_allowlist_maps_type_file_type_and_mime_by_extension(name, family, file_type, mime):
    [plan] = plan_note_files(COMPANY, 77, [doc(1, name)], cap_bytes=CAP)
    assert (plan.family, plan.file_type, plan.mime_type, plan.skip) == (family, file_type, mime, None)


@pytest.mark.parametrize(
    "name", ["setup.exe", "scan.heic", "archive.tar.gz", "noext", ".bashrc", "x.pdf.exe", "", None]
)
def test_outside_the_allowlist_is_skipped_with_a_reason(name):
    [plan] = plan_note_files(COMPANY, 77, [asset(5, name, s3_key="crm/1/assets/5/blob")], cap_bytes=CAP)
    assert plan.skip == Reason.ATTACHMENT_UNSUPPORTED_TYPE
    assert plan.details


def test_missing_file_name_falls_back_to_the_s3_key():
    [plan] = plan_note_files(COMPANY, 77, [asset(5, None, s3_key="crm/1/assets/5/Beach.JPG")], cap_bytes=CAP)
    assert (plan.skip, plan.file_type, plan.name) == (None, "jpg", "Beach.JPG")


def test_declared_size_over_the_cap_is_too_large_and_at_the_cap_is_not():
    plans = plan_note_files(
        COMPANY,
        77,
        [doc(1, "a.pdf", size=CAP + 1), doc(2, "b.pdf", size=CAP), doc(3, "c.pdf", size=None)],
        cap_bytes=CAP,
    )
    assert [p.skip for p in plans] == [Reason.ATTACHMENT_TOO_LARGE, None, None]


def test_first_audio_by_id_is_the_only_voice_note_and_order_is_fixed():
    rows = [
        doc(50, "quote.pdf"),
        asset(12, "memo.mp3", "Crm::NoteAudio"),
        asset(3, "photo.jpg"),
        asset(11, "voice.m4a", "Crm::NoteAudio"),
        asset(13, "call.ogg", "Crm::NoteAudio"),
    ]
    plans = plan_note_files(COMPANY, 77, rows, cap_bytes=CAP)
    entries = attachment_entries(plans, relinked(plans), BASE)
    assert [(e["legacy_crm_file"], e["type"]) for e in entries] == [
        ("asset-3", "image"),
        ("asset-11", "voice_note"),
        ("asset-12", "audio"),
        ("asset-13", "audio"),
        ("document-50", "document"),
    ]
    # the same rows in another order give the same entries (a re-run never reorders or duplicates)
    again = plan_note_files(COMPANY, 77, list(reversed(rows)), cap_bytes=CAP)
    assert attachment_entries(again, relinked(again), BASE) == entries


def test_voice_note_goes_to_the_next_audio_when_the_first_is_skipped_and_documents_never_are_voice_notes():
    rows = [asset(11, "voice.heic", "Crm::NoteAudio"), asset(12, "memo.mp3", "Crm::NoteAudio"), doc(1, "recording.mp3")]
    plans = plan_note_files(COMPANY, 77, rows, cap_bytes=CAP)
    types = [e["type"] for e in attachment_entries(plans, relinked(plans), BASE)]
    assert types == ["voice_note", "audio"]
    only_docs = plan_note_files(COMPANY, 77, [doc(1, "recording.mp3"), doc(2, "b.m4a")], cap_bytes=CAP)
    assert [e["type"] for e in attachment_entries(only_docs, relinked(only_docs), BASE)] == ["audio", "audio"]


def test_failed_file_gets_an_unavailable_entry_without_url_and_skipped_gets_none():
    plans = plan_note_files(COMPANY, 77, [asset(1, "a.jpg"), asset(2, "b.png"), asset(3, "c.exe")], cap_bytes=CAP)
    results = relinked(plans)
    results["asset-2"] = FileResult("asset-2", AttachmentOutcome.FAILED, Reason.ATTACHMENT_DOWNLOAD_FAILED)
    ok, failed = attachment_entries(plans, results, BASE)
    assert ok["url"] == f"{BASE}/{COMPANY}/notes/77/asset-1-a.jpg"
    assert set(ok) == {"type", "file_type", "name", "size", "mime_type", "url", "legacy_crm_file"}
    assert "url" not in failed
    assert failed["unavailable"] is True and failed["reason_code"] == "ATTACHMENT_DOWNLOAD_FAILED"
    assert failed["message"] == UNAVAILABLE_MESSAGE and failed["size"] == 1000


def test_entries_added_in_cdp_are_kept_and_old_migrated_entries_are_replaced():
    existing = [
        {"type": "image", "name": "old", "legacy_crm_file": "asset-1", "url": "x"},
        {"type": "document", "name": "added by an agent", "url": "https://cdp.example/y"},
    ]
    ours = [{"type": "image", "name": "new", "legacy_crm_file": "asset-1", "url": "z"}]
    assert merged_attachments(existing, ours) == [ours[0], existing[1]]
    assert merged_attachments(None, ours) == ours


HOSTILE = [
    "../../x.pdf",
    "..\\..\\windows\\system32\\x.pdf",
    "/etc/passwd.txt",
    "Relatório final 日本語 ☃.pdf",
    "日本語.pdf",
    "a" * 500 + ".pdf",
    "name with spaces & $pecial;chars?.docx",
    "x.pdf\x00.jpg",
    "....pdf",
    "%2e%2e%2fsecret.pdf",
    "CON.pdf",
    "x.p$d!f",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_give_safe_bounded_keys_under_the_company_prefix(name):
    key = object_key(COMPANY, 2000000001, "document", 42, name)
    assert SAFE_KEY_RE.match(key), key
    assert key.startswith(f"{COMPANY}/notes/2000000001/document-42-")
    assert ".." not in key and "\\" not in key and key.count("/") == 3
    assert len(key) <= 36 + len("/notes/2000000001/document-42-") + 100


def test_safe_name_examples():
    assert safe_file_name("../../x.pdf") == "x.pdf"
    assert safe_file_name("Relatório final.PDF") == "Relatorio-final.pdf"
    assert safe_file_name("日本語.pdf") == "file.pdf"
    assert len(safe_file_name("a" * 500 + ".pdf")) == 100
    assert display_name("../../x.pdf", "f") == "x.pdf"
    assert display_name("Relatório\x07 final.pdf", "f") == "Relatório final.pdf"
    assert len(display_name("b" * 500 + ".pdf", "f")) == 255 and display_name("b" * 500 + ".pdf", "f").endswith(".pdf")
    assert extension("x.tar.GZ") == "gz" and extension("noext") == "" and extension(".env") == ""


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(min_size=0, max_size=600),
    note=st.integers(min_value=1, max_value=2**62),
    source=st.integers(min_value=1, max_value=2**62),
    kind=st.sampled_from(["asset", "document"]),
)
def test_any_name_gives_a_safe_key(name, note, source, kind):
    key = object_key(COMPANY, note, kind, source, name)
    assert SAFE_KEY_RE.match(key)
    assert key.startswith(f"{COMPANY}/notes/{note}/{kind}-{source}-")
    assert len(key.encode()) < 300


def test_object_key_refuses_a_company_that_is_not_a_uuid():
    with pytest.raises(ValueError):
        object_key("../other-company", 1, "asset", 1, "x.jpg")


def test_proxy_url_is_the_configured_base_plus_key_never_s3():
    key = object_key(COMPANY, 9, "asset", 1, "a b.jpg")
    assert proxy_url("https://files.cdp.test/v1/", key) == f"https://files.cdp.test/v1/{key}"
    assert "s3" not in proxy_url(BASE, key) and "crm" not in proxy_url(BASE, key)


@pytest.mark.parametrize(
    "head, ext, bad",
    [
        (seed_files.exe(1)[:64], "pdf", "a Windows executable"),
        (b"\x7fELF\x02\x01", "jpg", "an ELF executable"),
        (seed_files.heic(1)[:64], "jpg", "a HEIF/AVIF image"),
        (b"  <!DOCTYPE html><script>", "png", "HTML/SVG markup"),
        (b"<svg onload=alert(1)>", "jpg", "HTML/SVG markup"),
        (b"<html>notes</html>", "txt", None),
        (seed_files.png(1)[:64], "png", None),
        (seed_files.jpeg(1)[:64], "png", None),  # another image format under an image name: served fine
        (seed_files.pdf(1)[:64], "pdf", None),
        (seed_files.docx(1)[:64], "docx", None),
        (seed_files.mp3(1)[:64], "mp3", None),
        (seed_files.m4a(1)[:64], "m4a", None),
    ],
)
def test_content_check_refuses_what_must_not_pass_as_an_allowlisted_file(head, ext, bad):
    assert forbidden_content(head, ext) == bad


def test_declared_content_type_corrections():
    assert declared_mime_differs("application/pdf", "image/jpeg")
    assert not declared_mime_differs("image/jpg", "image/jpeg")
    assert not declared_mime_differs("Image/JPEG; charset=binary", "image/jpeg")
    assert not declared_mime_differs(None, "image/jpeg")


def test_job_figures_rates_shares_and_gate():
    pages = [
        {
            "files": 10,
            "relinked": 7,
            "copied": 5,
            "reused": 2,
            "failed": 2,
            "skipped": 1,
            "source_missing": 1,
            "failed_by_reason": {"ATTACHMENT_DOWNLOAD_FAILED": 2},
            "skipped_by_reason": {"ATTACHMENT_TOO_LARGE": 1},
            "file_ms": [10, 20, 30],
        },
        {
            "files": 5,
            "relinked": 4,
            "copied": 4,
            "failed": 1,
            "skipped": 0,
            "source_missing": 0,
            "failed_by_reason": {"ATTACHMENT_UPLOAD_FAILED": 1},
            "file_ms": [1000],
        },
    ]
    f = attachment_figures(pages, gate=0.95, pages_total=3)
    assert (f["total"], f["relinked"], f["failed"], f["skipped"]) == (15, 11, 3, 1)
    assert f["failed_by_reason"] == {"ATTACHMENT_DOWNLOAD_FAILED": 2, "ATTACHMENT_UPLOAD_FAILED": 1}
    assert f["success_rate"] == round(11 / 14, 6)
    assert f["success_rate_where_source_exists"] == round(11 / 13, 6)
    assert f["failure_share"] == round(3 / 14, 6)
    assert f["gate_met"] is False and f["pages_done"] == 2 and f["pages_total"] == 3
    assert f["p95_file_seconds"] == 1.0
    empty = attachment_figures([], gate=0.95)
    assert (empty["success_rate"], empty["failure_share"], empty["gate_met"]) == (1.0, 0.0, True)


def test_percentile_nearest_rank():
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([3.0], 95) == 3.0 and percentile([], 95) is None


class Transient(Exception):
    pass


def test_retry_backs_off_on_transient_errors_then_succeeds():
    sleeps: list[float] = []
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise Transient("503")
        return "ok"

    counter = [0]
    policy = RetryPolicy(attempts=4, base_delay_s=0.1, sleep=sleeps.append)
    assert policy.call(flaky, counter, transient=lambda e: isinstance(e, Transient)) == "ok"
    assert counter == [3] and len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9 / 2
    assert all(0.05 <= s <= 0.2 for s in sleeps)


def test_retry_gives_up_after_the_attempts_and_never_retries_a_permanent_error():
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, base_delay_s=0.01, sleep=sleeps.append)
    counter = [0]
    with pytest.raises(Transient):
        policy.call(lambda: (_ for _ in ()).throw(Transient()), counter, transient=lambda e: True)
    assert counter == [3] and len(sleeps) == 2
    counter = [0]
    with pytest.raises(KeyError):
        policy.call(lambda: {}["missing"], counter, transient=lambda e: False)
    assert counter == [1]


def test_s3_error_classification():
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

    from notes_migration.stores.s3_store import SizeMismatch, is_not_found, is_transient

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(SizeMismatch("short read"))
    assert is_transient(client_error("SlowDown", 503)) and is_transient(client_error("InternalError", 500))
    assert not is_transient(client_error("NoSuchKey", 404)) and is_not_found(client_error("NoSuchKey", 404))
    assert not is_transient(client_error("NoSuchBucket", 404)) and not is_not_found(client_error("NoSuchBucket", 404))
    assert not is_transient(client_error("AccessDenied", 403))


@pytest.mark.parametrize("name", sorted(seed_files.GENERATORS))
def test_seed_files_are_real_formats(name):
    body = seed_files.sample_bytes(f"x.{name}", 12345678901)
    signatures = {
        "png": b"\x89PNG",
        "jpg": b"\xff\xd8\xff",
        "jpeg": b"\xff\xd8\xff",
        "gif": b"GIF89a",
        "webp": b"RIFF",
        "mp3": b"ID3",
        "m4a": b"\x00\x00\x00\x1cftypM4A",
        "ogg": b"OggS",
        "oga": b"OggS",
        "wav": b"RIFF",
        "pdf": b"%PDF-",
        "docx": b"PK\x03\x04",
        "xlsx": b"PK\x03\x04",
        "txt": b"Notes",
        "csv": b"Notes",
        "exe": b"MZ",
        "heic": b"\x00\x00\x00\x18ftypheic",
    }
    assert body.startswith(signatures[name])
    if name in ("docx", "xlsx"):
        import io
        import zipfile

        assert zipfile.ZipFile(io.BytesIO(body)).testzip() is None
    if name == "pdf":
        xref = int(body.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
        assert body[xref:].startswith(b"xref")
