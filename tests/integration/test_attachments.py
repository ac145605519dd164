"""Attachment relinking against the real local S3 server (moto in server mode), FerretDB and PostgreSQL.

CIDs used here: 2001–2051 only (tests/cids.py; other modules use other CIDs on the same servers).
2001: hand-placed files covering every path; 2002: upload failure through the operator;
2003: transient download failure, the dry-run plan and the halted skip; 2050/2051: dag.test() end to end.
"""

from __future__ import annotations

import json
import os

import pytest

from devtools import seed_files
from devtools.seed import SeedSpec, company_for
from notes_migration.domain.attachment_plan import MIME_TYPES, SAFE_KEY_RE, UNAVAILABLE_MESSAGE, extension
from notes_migration.domain.codes import AttachmentOutcome, Event, Reason
from notes_migration.domain.config import CONTACT_NOTES, EVENTS, NOTE_LOG, RunConfig, Thresholds
from notes_migration.ops.queries import cid_status
from notes_migration.run import batch, coverage, plan, relink, start, validate
from notes_migration.run.copy_engine import RetryPolicy
from notes_migration.stores import job_store
from notes_migration.stores import s3_store as s3
from tests.helpers import assert_conserved, task_states

pytestmark = [pytest.mark.integration]

PROXY = "https://files.cdp.test/api/v1/files"
CAP = 200_000  # lowered for CID 2001 so a real object can be over it
NO_FILES = {"image_share": 0.0, "audio_share": 0.0, "document_share": 0.0, "unsupported_file_share": 0.0}


@pytest.fixture(scope="module")
def crm_bucket() -> s3.Bucket:
    bucket = s3.bucket_for("crm_s3")
    s3.ensure_bucket(bucket)
    return bucket


@pytest.fixture(scope="module")
def cdp_bucket() -> s3.Bucket:
    bucket = s3.bucket_for("cdp_s3")
    s3.ensure_bucket(bucket)
    return bucket


def run_migration(
    crm, cdp, cid: int, run_id: str, thresholds: Thresholds | None = None, **cfg
) -> tuple[dict, list[dict]]:
    """Steps 1–4 in-process (no Airflow): job, coverage, pages, migrated notes. Leaves the lock held."""
    config = RunConfig(
        cid=cid,
        company_sso_id=company_for(cid),
        batch_size=cfg.pop("batch_size", 20),
        thresholds=thresholds or Thresholds(),
        **cfg,
    )
    job = start.start_job(crm, cdp, config, run_id=run_id, triggered_by="test", flag_cids=[cid])
    coverage.run_coverage(crm, cdp, job["job_id"])
    pages = plan.plan(crm, cdp, job["job_id"])
    for page in pages:
        batch.migrate_page(crm, cdp, job["job_id"], page)
    assert_conserved(crm, cdp, cid, job["job_id"])
    return job, pages


def notes_of(cdp, cid: int) -> dict[int, dict]:
    q = {"company_sso_id": company_for(cid), "legacy_crm_note_id": {"$exists": True}}
    return {d["legacy_crm_note_id"]: d for d in cdp[CONTACT_NOTES].find(q)}


def add_file(
    crm_rw,
    bucket: s3.Bucket,
    *,
    kind: str,
    file_id: int,
    note_id: int,
    name: str,
    body: bytes | None,
    declared_type: str | None = None,
    declared_size: int | None = None,
    asset_type: str = "Crm::NoteImage",
) -> str:
    """A CRM file row (assets or crm_note_attachments) and, unless body is None, its object in the CRM bucket.
    The declared content type defaults to the right one for the extension."""
    key = f"crm/{note_id // 1_000_000}/{kind}s/{file_id}/{name}"
    declared_type = declared_type or MIME_TYPES.get(extension(name), "application/octet-stream")
    size = declared_size if declared_size is not None else len(body or b"")
    with crm_rw.cursor() as cur:
        if kind == "asset":
            cur.execute(
                "INSERT INTO assets (id, type, assetable_type, assetable_id, file_file_name, file_content_type,"
                " file_file_size, s3_key, created_at, updated_at) VALUES (%s,%s,'Crm::Note',%s,%s,%s,%s,%s,now(),now())",
                (file_id, asset_type, note_id, name, declared_type, size, key),
            )
        else:
            cur.execute(
                "INSERT INTO crm_note_attachments (id, crm_note_id, file_file_name, file_content_type, file_file_size,"
                " s3_key, created_at, updated_at) VALUES (%s,%s,%s,%s,%s,%s,now(),now())",
                (file_id, note_id, name, declared_type, size, key),
            )
    crm_rw.commit()
    if body is not None:
        s3.put(bucket, key, body, declared_type)
    return key


def relink_all(crm, cdp, job: dict, pages: list[dict], source: s3.Bucket, target: s3.Bucket, **kw) -> list[dict]:
    return [relink.relink_page(crm, cdp, job["job_id"], p, source=source, target=target, **kw) for p in pages]


def by_ref(note: dict) -> dict[str, dict]:
    return {e["legacy_crm_file"]: e for e in note.get("attachments") or []}


# --------------------------------------------------------------------------- CID 2001: every path, by hand

BIG = b"%PDF-1.4\n" + bytes(CAP + 1 - 9)  # a real object over the (lowered) cap, declared small
LONG = "a" * 500 + ".pdf"


@pytest.fixture(scope="module")
def case(seed_cid, crm, crm_rw, cdp, crm_bucket, cdp_bucket):
    cid = 2001
    seed_cid(SeedSpec(cid=cid, notes=40, activity_share=0.2, **NO_FILES))
    thresholds = Thresholds(attachment_size_cap_bytes=CAP, proxy_url_base=PROXY, attachment_concurrency=4)
    # an earlier run migrated the notes and died before relinking (its lock went stale and was released)
    job1, pages = run_migration(crm, cdp, cid, "att-2001-interrupted", thresholds)
    start.release(cdp, cid, "att-2001-interrupted")
    notes = sorted(notes_of(cdp, cid))
    n = {k: notes[i] for i, k in enumerate(["media", "refused", "missing", "hostile", "mislabelled"])}
    with crm.cursor() as cur:  # a Person note that is not migrated (an activity): its file must be ignored
        cur.execute(
            "SELECT n.id FROM crm_notes n JOIN crm_note_types t ON t.id = n.crm_note_type_id "
            "WHERE n.organization_id = %s AND n.crm_person_id IS NOT NULL AND t.name = 'Calls' LIMIT 1",
            (cid,),
        )
        n["activity"] = cur.fetchone()[0]
    f = {}

    def put(label: str, note: str, k: int, **kw) -> None:
        file_id = n[note] * 10 + k
        add_file(crm_rw, crm_bucket, file_id=file_id, note_id=n[note], **kw)
        f[label] = f"{kw['kind']}-{file_id}"
        f[label + "_body"] = kw.get("body")

    put("photo", "media", 1, kind="asset", name="photo.jpg", body=seed_files.jpeg(1), declared_type="image/jpeg")
    put("board", "media", 2, kind="asset", name="Whiteboard.PNG", body=seed_files.png(2), declared_type="image/png")
    put(
        "memo",
        "media",
        3,
        kind="asset",
        name="memo.mp3",
        body=seed_files.mp3(3),
        declared_type="audio/mpeg",
        asset_type="Crm::NoteAudio",
    )
    put(
        "voice",
        "media",
        4,
        kind="asset",
        name="voice.m4a",
        body=seed_files.m4a(4),
        declared_type="audio/mp4",
        asset_type="Crm::NoteAudio",
    )
    put(
        "call",
        "media",
        5,
        kind="asset",
        name="call.ogg",
        body=seed_files.ogg(5),
        declared_type="audio/ogg",
        asset_type="Crm::NoteAudio",
    )
    put("pdf", "media", 1, kind="document", name="quote.pdf", body=seed_files.pdf(1), declared_type="application/pdf")
    put("docx", "media", 2, kind="document", name="contract.docx", body=seed_files.docx(2))
    put("xlsx", "media", 3, kind="document", name="prices.xlsx", body=seed_files.xlsx(3))
    put("txt", "media", 4, kind="document", name="notes.txt", body=seed_files.text(4), declared_type="text/plain")
    put("exe", "refused", 1, kind="document", name="setup.exe", body=seed_files.exe(1))
    put("heic", "refused", 1, kind="asset", name="scan.heic", body=seed_files.heic(1), declared_type="image/heic")
    put("declared_big", "refused", 2, kind="document", name="big.pdf", body=seed_files.pdf(2), declared_size=30_000_000)
    put("real_big", "refused", 3, kind="document", name="scan.pdf", body=BIG, declared_size=1_000)
    put("disguised", "refused", 4, kind="document", name="invoice.pdf", body=seed_files.exe(4))
    put("lost", "missing", 1, kind="asset", name="lost.jpg", body=None, declared_size=4_000)
    put("kept", "missing", 2, kind="asset", name="kept.png", body=seed_files.png(9), declared_type="image/png")
    put("dotdot", "hostile", 1, kind="document", name="../../x.pdf", body=seed_files.pdf(11))
    put("unicode", "hostile", 2, kind="document", name="Relatório final 日本語 ☃.pdf", body=seed_files.pdf(12))
    put("long", "hostile", 3, kind="document", name=LONG, body=seed_files.pdf(13))
    put(
        "wrongtype",
        "mislabelled",
        1,
        kind="asset",
        name="site.jpg",
        body=seed_files.jpeg(7),
        declared_type="application/pdf",
    )
    put("ignored", "activity", 1, kind="document", name="call-notes.pdf", body=seed_files.pdf(14))

    before = set(s3.list_objects(cdp_bucket))
    # a new run (notes already there, so only its relink step matters): the files must still arrive
    job2 = start.start_job(
        crm,
        cdp,
        RunConfig(cid=cid, company_sso_id=company_for(cid), batch_size=20, thresholds=thresholds),
        run_id="att-2001-second",
        triggered_by="test",
        flag_cids=[cid],
    )
    pages2 = plan.plan(crm, cdp, job2["job_id"])
    attachments_before = {k: d.get("attachments") for k, d in notes_of(cdp, cid).items()}
    first = relink_all(crm, cdp, job2, pages2, crm_bucket, cdp_bucket)
    after_first = notes_of(cdp, cid)
    objects_first = s3.list_objects(cdp_bucket)
    heads_first = {
        k: cdp_bucket.client.head_object(Bucket=cdp_bucket.name, Key=k)["LastModified"]
        for k in objects_first
        if k.startswith(company_for(cid) + "/")
    }
    second = relink_all(crm, cdp, job2, pages2, crm_bucket, cdp_bucket)
    verdict = validate.validate(crm, cdp, job2["job_id"])
    start.release(cdp, cid, "att-2001-second")
    yield {
        "cid": cid,
        "company": company_for(cid),
        "job": job2,
        "job1": job1,
        "n": n,
        "f": f,
        "first": first,
        "second": second,
        "notes": after_first,
        "notes_after_second": notes_of(cdp, cid),
        "before": before,
        "objects": objects_first,
        "heads": heads_first,
        "verdict": verdict,
        "attachments_before": attachments_before,
    }


def test_interrupted_run_notes_get_their_files_from_the_next_run(case, cdp):
    first_run = job_store.page_results(cdp, case["job1"]["job_id"])
    assert sum(p["migrated"] for p in first_run) == len(case["notes"]) and len(first_run) >= 2
    assert job_store.attachment_page_results(cdp, case["job1"]["job_id"]) == []  # it died before relinking
    assert all(a == [] for a in case["attachments_before"].values())  # its notes have no files yet
    assert len(job_store.attachment_page_results(cdp, case["job"]["job_id"])) == len(first_run)
    assert len(case["notes"][case["n"]["media"]]["attachments"]) == 9


def test_images_audios_documents_land_under_the_company_prefix_with_proxy_urls(case, cdp_bucket):
    company, f = case["company"], case["f"]
    entries = by_ref(case["notes"][case["n"]["media"]])
    expected = {  # ref: (type, file_type, mime_type)
        f["photo"]: ("image", "jpg", "image/jpeg"),
        f["board"]: ("image", "png", "image/png"),
        f["memo"]: ("voice_note", "mp3", "audio/mpeg"),
        f["voice"]: ("audio", "m4a", "audio/mp4"),
        f["call"]: ("audio", "ogg", "audio/ogg"),
        f["pdf"]: ("document", "pdf", "application/pdf"),
        f["docx"]: ("document", "docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        f["xlsx"]: ("document", "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        f["txt"]: ("document", "txt", "text/plain"),
    }
    assert {ref: (e["type"], e["file_type"], e["mime_type"]) for ref, e in entries.items()} == expected
    # the array order is fixed: assets then documents, each by id
    assert [e["legacy_crm_file"] for e in case["notes"][case["n"]["media"]]["attachments"]] == list(expected)
    for label in ("photo", "board", "memo", "voice", "call", "pdf", "docx", "xlsx", "txt"):
        e = entries[f[label]]
        key = e["url"].removeprefix(PROXY + "/")
        assert e["url"].startswith(f"{PROXY}/{company}/notes/{case['n']['media']}/")
        assert "amazonaws" not in e["url"] and "127.0.0.1" not in e["url"] and "crm/" not in e["url"]
        got = cdp_bucket.client.get_object(Bucket=cdp_bucket.name, Key=key)
        assert got["Body"].read() == f[label + "_body"]  # the bytes, not a placeholder
        assert got["ContentType"] == e["mime_type"] and got["ContentLength"] == e["size"] == len(f[label + "_body"])
        assert key.lower().endswith("-" + e["name"].lower())


def test_at_most_one_voice_note_per_note(case):
    for note in case["notes"].values():
        assert sum(1 for e in note.get("attachments") or [] if e["type"] == "voice_note") <= 1
    voice = [e for e in case["notes"][case["n"]["media"]]["attachments"] if e["type"] == "voice_note"]
    assert [e["legacy_crm_file"] for e in voice] == [case["f"]["memo"]]  # the first audio by id


def test_unsupported_and_oversized_files_are_skipped_with_reasons(case, cdp, cdp_bucket):
    f, note_id = case["f"], case["n"]["refused"]
    assert case["notes"][note_id]["attachments"] == []  # nothing of this note is allowlisted and under the cap
    log = {e["file"]["ref"]: e for e in job_store.note_log(cdp, case["job"]["job_id"], AttachmentOutcome.SKIPPED.value)}
    assert {
        ref: log[ref]["reason_code"] for ref in (f["exe"], f["heic"], f["declared_big"], f["real_big"], f["disguised"])
    } == {
        f["exe"]: Reason.ATTACHMENT_UNSUPPORTED_TYPE,
        f["heic"]: Reason.ATTACHMENT_UNSUPPORTED_TYPE,
        f["declared_big"]: Reason.ATTACHMENT_TOO_LARGE,
        f["real_big"]: Reason.ATTACHMENT_TOO_LARGE,
        f["disguised"]: Reason.ATTACHMENT_UNSUPPORTED_TYPE,
    }
    assert "executable" in log[f["disguised"]]["details"] and str(CAP) in log[f["real_big"]]["details"]
    assert not [k for k in case["objects"] if f"/notes/{note_id}/" in k]  # none of them was copied


def test_missing_source_gives_download_failed_an_unavailable_entry_and_the_note_stays(case, cdp):
    f, note_id, job_id = case["f"], case["n"]["missing"], case["job"]["job_id"]
    entries = by_ref(case["notes"][note_id])
    lost, kept = entries[f["lost"]], entries[f["kept"]]
    assert lost["unavailable"] is True and "url" not in lost
    assert lost["reason_code"] == Reason.ATTACHMENT_DOWNLOAD_FAILED and lost["message"] == UNAVAILABLE_MESSAGE
    assert kept["url"].startswith(PROXY) and "unavailable" not in kept
    failed = job_store.note_log(cdp, job_id, AttachmentOutcome.FAILED.value)
    assert [(e["legacy_crm_note_id"], e["reason_code"]) for e in failed] == [
        (note_id, Reason.ATTACHMENT_DOWNLOAD_FAILED)
    ]
    event = cdp[EVENTS].find_one({"job_id": job_id, "event": Event.ATTACHMENT_FAILED.value})
    assert event["properties"]["legacy_crm_note_id"] == note_id
    assert event["properties"]["reason_code"] == Reason.ATTACHMENT_DOWNLOAD_FAILED
    # the note is migrated and not a failed note
    assert job_store.note_log(cdp, job_id, "failed") == []
    assert case["verdict"].state == "completed_success" and case["verdict"].match_pct == 100.0


def test_hostile_names_give_safe_keys(case, cdp_bucket):
    f, company, note_id = case["f"], case["company"], case["n"]["hostile"]
    entries = by_ref(case["notes"][note_id])
    keys = {label: entries[f[label]]["url"].removeprefix(PROXY + "/") for label in ("dotdot", "unicode", "long")}
    assert keys["dotdot"] == f"{company}/notes/{note_id}/{f['dotdot']}-x.pdf"
    assert keys["unicode"] == f"{company}/notes/{note_id}/{f['unicode']}-Relatorio-final.pdf"
    assert keys["long"].endswith("a" * 96 + ".pdf") and len(keys["long"].rsplit("-", 1)[1]) == 100
    for key in keys.values():
        assert SAFE_KEY_RE.match(key) and key in case["objects"]
    assert entries[f["unicode"]]["name"] == "Relatório final 日本語 ☃.pdf"  # the UI still shows the real name
    assert entries[f["dotdot"]]["name"] == "x.pdf"


def test_mislabelled_content_type_is_corrected(case, cdp_bucket, cdp):
    entry = by_ref(case["notes"][case["n"]["mislabelled"]])[case["f"]["wrongtype"]]
    assert (entry["type"], entry["mime_type"]) == ("image", "image/jpeg")
    key = entry["url"].removeprefix(PROXY + "/")
    assert cdp_bucket.client.head_object(Bucket=cdp_bucket.name, Key=key)["ContentType"] == "image/jpeg"
    assert job_store.get_job(cdp, case["job"]["job_id"])["attachments"]["content_type_corrected"] == 1


def test_no_object_outside_the_company_prefix(case):
    company, ids = case["company"], {str(v) for v in case["n"].values()}
    new = set(case["objects"]) - case["before"]
    ours = {k for k in new if any(f"/{i}/" in k or f"-{i}" in k for i in ids) or k.startswith(company)}
    assert ours and all(k.startswith(f"{company}/notes/") and SAFE_KEY_RE.match(k) for k in ours), sorted(ours)
    relinked = sum(1 for d in case["notes"].values() for e in d.get("attachments") or [] if "url" in e)
    assert len([k for k in case["objects"] if k.startswith(company + "/")]) == relinked == 9 + 1 + 3 + 1
    assert not [k for k in case["objects"] if f"/notes/{case['n']['activity']}/" in k]  # not migrated: not copied


def test_second_run_copies_nothing_new_and_leaves_attachments_unchanged(case, cdp_bucket):
    first, second = case["first"], case["second"]
    assert sum(p["copied"] for p in first) == 14 and sum(p["copied"] for p in second) == 0
    assert sum(p["reused"] for p in second) == 14 and sum(p["notes_updated"] for p in second) == 0
    assert {k: d.get("attachments") for k, d in case["notes_after_second"].items()} == {
        k: d.get("attachments") for k, d in case["notes"].items()
    }
    for key, modified in case["heads"].items():  # not re-uploaded
        assert cdp_bucket.client.head_object(Bucket=cdp_bucket.name, Key=key)["LastModified"] == modified


def test_job_figures_and_status(case, cdp):
    figures = job_store.get_job(cdp, case["job"]["job_id"])["attachments"]
    assert figures["total"] == 21 - 1  # the activity's file is not counted
    assert figures["relinked"] == 14 and figures["failed"] == 1 and figures["skipped"] == 5
    assert figures["failed_by_reason"] == {"ATTACHMENT_DOWNLOAD_FAILED": 1}
    assert figures["skipped_by_reason"] == {"ATTACHMENT_UNSUPPORTED_TYPE": 3, "ATTACHMENT_TOO_LARGE": 2}
    assert figures["source_missing"] == 1 and figures["success_rate_where_source_exists"] == 1.0
    assert figures["success_rate"] == round(14 / 15, 6) and figures["failure_share"] == round(1 / 15, 6)
    assert figures["gate_met"] is True and figures["p95_file_seconds"] < 30
    assert case["verdict"].attachment_failure_share == figures["failure_share"]
    status = cid_status(cdp, case["cid"])
    assert status["status"] == "completed_success" and status["attachments"]["relinked"] == 14


# --------------------------------------------------------------------------- CID 2002: upload failure, via the operator


def test_upload_failure_marks_files_unavailable_and_keeps_the_notes(seed_cid, crm, cdp, cdp_bucket, monkeypatch):
    from notes_migration.tasks.attachment_relink import AttachmentRelinkOperator

    cid = 2002
    seeded = seed_cid(
        SeedSpec(
            cid=cid,
            notes=40,
            image_share=0.5,
            audio_share=0.3,
            document_share=0.3,
            missing_file_share=0,
            mislabelled_file_share=0,
            disguised_file_share=0,
            oversized_file_share=0,
            unsupported_file_share=0,
        )
    )
    job, pages = run_migration(crm, cdp, cid, "att-2002")
    try:
        conn = json.loads(os.environ["AIRFLOW_CONN_CDP_S3"])
        conn["extra"]["bucket"] = "cdp-files-missing-2002"  # this bucket does not exist
        monkeypatch.setenv("AIRFLOW_CONN_CDP_S3", json.dumps(conn))
        out = [AttachmentRelinkOperator(task_id="relink_attachments", job=job, page=p).execute({}) for p in pages]
    finally:
        start.release(cdp, cid, "att-2002")
    files = sum(p["files"] for p in out)
    assert files > 10 and seeded["file_variants"].get("ok") == seeded["assets"] + seeded["documents"]
    assert sum(p["failed"] for p in out) == files and sum(p["relinked"] for p in out) == 0
    notes = notes_of(cdp, cid)
    assert len(notes) == sum(r["migrated"] for r in job_store.page_results(cdp, job["job_id"]))  # every note is there
    entries = [e for d in notes.values() for e in d["attachments"]]
    assert len(entries) == files
    assert all(
        e["unavailable"] and e["reason_code"] == Reason.ATTACHMENT_UPLOAD_FAILED and "url" not in e for e in entries
    )
    assert job_store.note_log(cdp, job["job_id"], "failed") == []  # no failed note
    assert cdp[EVENTS].count_documents({"job_id": job["job_id"], "event": Event.ATTACHMENT_FAILED.value}) == files
    figures = relink.summarise_job(cdp, job["job_id"])
    assert figures["failure_share"] == 1.0 and figures["failed_by_reason"] == {"ATTACHMENT_UPLOAD_FAILED": files}
    assert not s3.list_objects(cdp_bucket, company_for(cid) + "/")


# --------------------------------------------------------------------------- CID 2003: transient errors, skips


def test_transient_download_errors_are_retried_then_reported(seed_cid, crm, cdp, cdp_bucket):
    from botocore.config import Config

    cid = 2003
    seed_cid(
        SeedSpec(
            cid=cid,
            notes=30,
            image_share=0.4,
            document_share=0.2,
            missing_file_share=0,
            mislabelled_file_share=0,
            disguised_file_share=0,
            oversized_file_share=0,
            unsupported_file_share=0,
        )
    )
    job, pages = run_migration(crm, cdp, cid, "att-2003")
    real = s3.bucket_for("crm_s3")
    import boto3

    unreachable = s3.Bucket(
        boto3.client(
            "s3",
            endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="x",
            aws_secret_access_key="y",
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1),
        ),
        real.name,
    )
    sleeps: list[float] = []
    try:
        out = relink_all(
            crm,
            cdp,
            job,
            pages,
            unreachable,
            cdp_bucket,
            retry=RetryPolicy(attempts=3, base_delay_s=0.01, sleep=sleeps.append),
        )
        failed = job_store.note_log(cdp, job["job_id"], AttachmentOutcome.FAILED.value)
        assert failed and len(failed) == sum(p["failed"] for p in out) == sum(p["files"] for p in out)
        assert all(e["reason_code"] == Reason.ATTACHMENT_DOWNLOAD_FAILED and e["file"]["attempts"] == 3 for e in failed)
        assert len(sleeps) == 2 * len(failed)  # backoff between the attempts of every file
        figures = relink.summarise_job(cdp, job["job_id"])
        assert figures["source_missing"] == 0 and figures["success_rate_where_source_exists"] == 0.0
        # the sources come back: a retry of the same pages copies everything and clears the failures
        again = relink_all(crm, cdp, job, pages, real, cdp_bucket)
        assert sum(p["relinked"] for p in again) == sum(p["files"] for p in out)
        assert job_store.note_log(cdp, job["job_id"], AttachmentOutcome.FAILED.value) == []
        assert all("unavailable" not in e for d in notes_of(cdp, cid).values() for e in d["attachments"])
    finally:
        start.release(cdp, cid, "att-2003")


def test_dry_run_plans_and_halted_jobs_relink_nothing(seed_cid, crm, cdp, crm_bucket, cdp_bucket):
    cid = 2003
    dry, pages = run_migration(crm, cdp, cid, "att-2003-dry", dry_run=True)
    start.release(cdp, cid, "att-2003-dry")
    target_before, notes_before = s3.list_objects(cdp_bucket, f"{company_for(cid)}/"), notes_of(cdp, cid)
    planned = relink.relink_page(crm, cdp, dry["job_id"], pages[0], source=crm_bucket, target=cdp_bucket)
    assert planned["files"] == planned["relinked"] + planned["failed"] + planned["skipped"] > 0
    # the notes and files are there from the test above: the plan reuses them all, copies and updates nothing
    assert planned["copied"] == planned["bytes_to_copy"] == 0 and planned["reused"] == planned["relinked"]
    assert s3.list_objects(cdp_bucket, f"{company_for(cid)}/") == target_before
    assert notes_of(cdp, cid) == notes_before
    (page_doc,) = job_store.attachment_page_results(cdp, dry["job_id"])
    assert page_doc["dry_run"] and page_doc["bytes_copied"] == 0 and page_doc["notes_updated"] == 0
    job_store.update_job(
        cdp, dry["job_id"], state="halted", halted={"reason": "FAILURE_RATE_EXCEEDED"}, **{"config.dry_run": False}
    )
    with pytest.raises(relink.RelinkSkipped, match="halted"):
        relink.relink_page(crm, cdp, dry["job_id"], pages[1], source=crm_bucket, target=cdp_bucket)
    assert len(job_store.attachment_page_results(cdp, dry["job_id"])) == 1


# --------------------------------------------------------------------------- end to end with dag.test()


def _files_of_migrated_notes(crm, cdp, cid: int) -> list[tuple]:
    migrated = set(notes_of(cdp, cid))
    with crm.cursor() as cur:
        cur.execute(
            "SELECT 'asset', id, assetable_id, file_file_size, s3_key FROM assets WHERE assetable_id = ANY(%s)"
            " UNION ALL SELECT 'document', id, crm_note_id, file_file_size, s3_key FROM crm_note_attachments"
            " WHERE crm_note_id = ANY(%s)",
            (sorted(migrated), sorted(migrated)),
        )
        return cur.fetchall()


@pytest.mark.e2e
def test_dag_run_relinks_every_migrated_note(seed_cid, run_dag, crm, cdp, crm_bucket, cdp_bucket):
    cid = 2050
    spec = SeedSpec(
        cid=cid,
        notes=100,
        image_share=0.3,
        audio_share=0.3,
        document_share=0.3,
        missing_file_share=0.05,
        mislabelled_file_share=0.05,
        disguised_file_share=0.03,
        oversized_file_share=0.03,
    )
    seed_cid(spec)
    dag_run = run_dag({"cid": cid, "company_sso_id": spec.company_sso_id, "batch_size": 50})
    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    assert (
        states["relink_attachments"] == ["success"] * len(states["migrate_page"]) and len(states["migrate_page"]) >= 2
    )
    assert states["send_alerts"] == ["skipped"] and states["finalise"] == ["success"]  # a success pages nobody
    status = cid_status(cdp, cid)
    figures = status["attachments"]
    assert status["status"] == "completed_success"
    files = _files_of_migrated_notes(crm, cdp, cid)
    present = s3.list_objects(crm_bucket, f"crm/{cid}/")
    missing = [f for f in files if f[4] not in present]
    assert figures["total"] == len(files) and missing
    assert (
        figures["failed_by_reason"]
        == {"ATTACHMENT_DOWNLOAD_FAILED": len(missing)}
        == {"ATTACHMENT_DOWNLOAD_FAILED": figures["source_missing"]}
    )
    assert figures["skipped_by_reason"]["ATTACHMENT_TOO_LARGE"] == sum(1 for f in files if f[3] > 25 * 1024 * 1024)
    assert figures["success_rate_where_source_exists"] >= 0.95 and figures["gate_met"]  # PRD Stage-1 gate
    assert figures["relinked"] + figures["failed"] + figures["skipped"] == figures["total"]
    assert 0 < figures["failure_share"] < 0.2
    urls = [e["url"] for d in notes_of(cdp, cid).values() for e in d["attachments"] if "url" in e]
    assert len(urls) == figures["relinked"]
    keys = set(s3.list_objects(cdp_bucket, f"{spec.company_sso_id}/"))
    assert {u.removeprefix(Thresholds().proxy_url_base + "/") for u in urls} == keys
    for d in notes_of(cdp, cid).values():
        assert sum(1 for e in d["attachments"] if e["type"] == "voice_note") <= 1


def files_all_copyable(cid: int, notes: int = 40) -> SeedSpec:
    """One task page of notes with images and documents, every file present and copyable."""
    return SeedSpec(
        cid=cid,
        notes=notes,
        image_share=0.4,
        document_share=0.3,
        missing_file_share=0,
        mislabelled_file_share=0,
        disguised_file_share=0,
        oversized_file_share=0,
        unsupported_file_share=0,
    )


@pytest.mark.e2e
def test_dag_run_with_an_unwritable_target_alerts_and_keeps_every_note(seed_cid, run_dag, cdp, monkeypatch):
    cid = 2051
    spec = files_all_copyable(cid)
    seed_cid(spec)
    conn = json.loads(os.environ["AIRFLOW_CONN_CDP_S3"])
    conn["extra"]["bucket"] = "cdp-files-missing-2051"
    monkeypatch.setenv("AIRFLOW_CONN_CDP_S3", json.dumps(conn))
    dag_run = run_dag({"cid": cid, "company_sso_id": spec.company_sso_id})
    states = task_states(dag_run)
    status = cid_status(cdp, cid)
    assert status["status"] == "completed_success" and status["validation"]["match_pct"] == 100.0, states
    assert status["attachments"]["failure_share"] == 1.0
    assert set(status["attachments"]["failed_by_reason"]) == {"ATTACHMENT_UPLOAD_FAILED"}
    assert states["send_alerts"] == ["success"]  # > 20% → the Slack branch
    # one task page: its files were copied (and failed) inside migrate_page, its relink task skipped unrun
    assert states["migrate_page"] == ["success"] and states["relink_attachments"] == ["skipped"]
    assert cdp[NOTE_LOG].count_documents({"cid": cid, "outcome": "failed"}) == 0


@pytest.mark.e2e
def test_a_whole_cid_page_whose_inline_relink_fails_still_gets_its_files_from_the_relink_task(
    seed_cid, run_dag, cdp, monkeypatch
):
    """A CID of one task page relinks inside migrate_page and skips its relink task. When that inline relink
    fails for good, migrate_page fails, pushes no skip, and relink_attachments (all_done) copies every file."""
    from airflow.sdk.exceptions import AirflowFailException

    from notes_migration.tasks import migration_tasks

    cid = 2004
    spec = files_all_copyable(cid, notes=30)
    seed_cid(spec)

    def inline_relink_fails(conn_id: str):
        raise AirflowFailException(f"inline relink of {conn_id} fails (test)")

    monkeypatch.setattr(migration_tasks, "_bucket", inline_relink_fails)  # only migrate_page's inline relink
    dag_run = run_dag({"cid": cid, "company_sso_id": spec.company_sso_id})
    states = task_states(dag_run)
    assert states["migrate_page"] == ["failed"] and states["relink_attachments"] == ["success"], states
    figures = cid_status(cdp, cid)["attachments"]
    assert figures["total"] > 0 and figures["relinked"] == figures["total"], figures
