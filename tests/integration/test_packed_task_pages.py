"""Task pages of several batches against the real servers: each batch is decided, inserted, relinked and
accounted on its own, and a task page run again resumes at its first batch that is not done.

CIDs used here: 1130–1135.
"""

from __future__ import annotations

import pytest
from pymongo import MongoClient, monitoring

from devtools.seed import SeedSpec, company_for
from notes_migration.domain.config import TARGET_TASK_PAGES, RunConfig
from notes_migration.domain.rows import batches_of
from notes_migration.run import batch, coverage, plan, relink, start, validate
from notes_migration.stores import cdp_store, job_store
from notes_migration.stores import s3_store as s3
from tests.helpers import assert_conserved

pytestmark = pytest.mark.integration


class _Commands(monitoring.CommandListener):
    """Counts the commands of one name sent to one collection (a pymongo command listener)."""

    def __init__(self, name: str, collection: str) -> None:
        self.name, self.collection, self.count = name, collection, 0

    def started(self, event) -> None:
        if event.command_name == self.name and event.command.get(self.name) == self.collection:
            self.count += 1

    def succeeded(self, event) -> None: ...

    def failed(self, event) -> None: ...


def _watched(cdp, name: str, collection: str):
    """(counter, the CDP database through a client of its own that counts `name` commands to `collection`)."""
    counter = _Commands(name, collection)
    host, port = cdp.client.address
    return counter, MongoClient(host, port, event_listeners=[counter], tz_aware=True)[cdp.name]


def _start(crm, cdp, cid: int, run_id: str) -> dict:
    cfg = RunConfig(cid=cid, company_sso_id=company_for(cid), batch_size=3, force_rerun=True)
    job = start.start_job(crm, cdp, cfg, run_id=run_id, triggered_by="test", flag_cids=[cid])
    coverage.run_coverage(crm, cdp, job["job_id"])
    return job


def test_a_packed_task_page_accounts_and_relinks_every_batch_on_its_own(seed_cid, crm, cdp):
    seed_cid(SeedSpec(cid=1130, notes=80))
    job = _start(crm, cdp, 1130, "packed-1130")
    try:
        pages = plan.plan(crm, cdp, job["job_id"])
        batches = [b for p in pages for b in batches_of(p)]
        assert len(batches) > TARGET_TASK_PAGES and len(pages) < len(batches)
        assert all(len(p["batches"]) == len(batches_of(p)) > 1 for p in pages[:-1])
        stored = job_store.get_job(cdp, job["job_id"])
        assert stored["pages_total"] == len(batches) and stored["task_pages_total"] == len(pages)

        source, target = s3.bucket_for("crm_s3"), s3.bucket_for("cdp_s3")
        summaries = []
        for page in pages:
            summaries.append(batch.migrate_page(crm, cdp, job["job_id"], page))
            relink.relink_page(crm, cdp, job["job_id"], page, source=source, target=target)
        assert sum(s["rows"] for s in summaries) == sum(b["size"] for b in batches)
        results = job_store.page_results(cdp, job["job_id"])
        assert [r["page_no"] for r in results] == [b["page_no"] for b in batches]  # one result per batch
        assert all(r["state"] == "done" and r["rows"] == b["size"] for r, b in zip(results, batches, strict=True))
        relinked = job_store.attachment_page_results(cdp, job["job_id"])
        assert sorted(p["page_no"] for p in relinked) == [b["page_no"] for b in batches]
        assert sum(p["relinked"] for p in relinked) > 0
        verdict = validate.validate(crm, cdp, job["job_id"]).as_dict()
        assert verdict["match_pct"] == 100.0, verdict
        figures = job_store.get_job(cdp, job["job_id"])["attachments"]
        assert figures["pages_done"] == figures["pages_total"] == len(batches)
    finally:
        start.release(cdp, 1130, "packed-1130")
    assert_conserved(crm, cdp, 1130, job["job_id"])


def test_a_packed_task_page_run_again_resumes_at_its_first_batch_not_done(seed_cid, crm, cdp):
    seed_cid(SeedSpec(cid=1131, notes=80, upload_files=False))
    job = _start(crm, cdp, 1131, "packed-1131")
    try:
        first = plan.plan(crm, cdp, job["job_id"])[0]
        batches = batches_of(first)
        assert len(batches) >= 2

        class DiesOnSecondBatch(cdp_store.MongoNoteWriter):
            calls = 0

            def write(self, docs):
                DiesOnSecondBatch.calls += 1
                if DiesOnSecondBatch.calls == 2:
                    raise ConnectionError("the task process lost the CDP mid-page")
                return super().write(docs)

        with pytest.raises(ConnectionError):
            batch.migrate_page(crm, cdp, job["job_id"], first, writer=DiesOnSecondBatch(cdp))
        assert job_store.done_page_nos(cdp, job["job_id"]) == {batches[0]["page_no"]}
        finished = {r["page_no"]: r.get("finished_at") for r in job_store.page_results(cdp, job["job_id"])}

        again = batch.migrate_page(crm, cdp, job["job_id"], first)  # what an Airflow retry of the task does
        assert again["batches_resumed"] == 1
        assert again["rows"] == sum(b["size"] for b in batches[1:])
        results = {r["page_no"]: r for r in job_store.page_results(cdp, job["job_id"])}
        done, died = results[batches[0]["page_no"]], results[batches[1]["page_no"]]
        assert done["finished_at"] == finished[batches[0]["page_no"]]  # the finished batch was not re-run ...
        assert died["state"] == "done" and finished[batches[1]["page_no"]] is None  # ... the one that died was
        assert sum(r["already_migrated"] for r in results.values()) == 0  # nothing recounted as already there
        for page in plan.plan(crm, cdp, job["job_id"])[1:]:
            batch.migrate_page(crm, cdp, job["job_id"], page)
        validate.validate(crm, cdp, job["job_id"])
    finally:
        start.release(cdp, 1131, "packed-1131")
    assert_conserved(crm, cdp, 1131, job["job_id"])


def test_relinking_reads_no_note_whose_files_are_all_skipped_and_counts_as_a_lookup_would(seed_cid, crm, cdp):
    """Notes whose every file is skipped (unsupported type, over the cap) get no write, so the relink step
    takes their presence from the page's audit record instead of a scan of contact_notes per note; the
    page's figures are those the lookups give (checked by relinking again with the audit removed)."""
    only_skipped = {"image_share": 0.0, "audio_share": 0.0, "document_share": 0.0, "unsupported_file_share": 0.4}
    seed_cid(SeedSpec(cid=1132, notes=60, upload_files=False, **only_skipped))
    job = _start(crm, cdp, 1132, "packed-1132")

    finds, watched = _watched(cdp, "find", "contact_notes")
    counters = ("files", "skipped", "relinked", "failed", "files_without_cdp_note", "notes_with_files")
    try:
        pages = plan.plan(crm, cdp, job["job_id"])
        for page in pages:
            batch.migrate_page(crm, cdp, job["job_id"], page)
        for page in pages:
            relink.relink_page(crm, watched, job["job_id"], page, source=lambda: None, target=lambda: None)
        first = {
            p["page_no"]: {k: p[k] for k in counters} for p in job_store.attachment_page_results(cdp, job["job_id"])
        }
        assert sum(p["skipped"] for p in first.values()) > 0 and sum(p["relinked"] for p in first.values()) == 0
        assert finds.count == 0  # no note was read: every file skipped, every note inserted by this job

        cdp["crm_migration_audit"].delete_many({"job_id": job["job_id"]})  # now each note must be looked up
        for page in pages:
            relink.relink_page(crm, watched, job["job_id"], page, source=lambda: None, target=lambda: None)
        again = {
            p["page_no"]: {k: p[k] for k in counters} for p in job_store.attachment_page_results(cdp, job["job_id"])
        }
        assert finds.count > 0 and again == first
    finally:
        watched.client.close()
        start.release(cdp, 1132, "packed-1132")


def test_a_first_relink_attempt_deletes_no_file_record_and_a_retry_still_does(seed_cid, crm, cdp):
    """The operator's first try skips the per-page delete of file records (a scan of the whole note log on
    FerretDB v1): none can exist yet. Relinking again as a retry deletes them first and ends with the same
    records, none duplicated."""
    seed_cid(SeedSpec(cid=1133, notes=40, missing_file_share=0.2, unsupported_file_share=0.2))
    job = _start(crm, cdp, 1133, "packed-1133")

    deletes, watched = _watched(cdp, "delete", "crm_migration_note_log")
    source, target = s3.bucket_for("crm_s3"), s3.bucket_for("cdp_s3")
    outcomes = ["attachment_failed", "attachment_skipped"]
    try:
        pages = plan.plan(crm, cdp, job["job_id"])
        for page in pages:
            batch.migrate_page(crm, cdp, job["job_id"], page)
            relink.relink_page(crm, watched, job["job_id"], page, source=source, target=target, first_attempt=True)
        first = sorted(e["file"]["ref"] for e in job_store.note_log(cdp, job["job_id"], outcomes))
        assert first and deletes.count == 0
        for page in pages:  # as an Airflow retry of every relink task
            relink.relink_page(crm, watched, job["job_id"], page, source=source, target=target)
        assert deletes.count > 0
        assert sorted(e["file"]["ref"] for e in job_store.note_log(cdp, job["job_id"], outcomes)) == first
        assert validate.validate(crm, cdp, job["job_id"]).as_dict()["match_pct"] == 100.0
    finally:
        watched.client.close()
        start.release(cdp, 1133, "packed-1133")
    assert_conserved(crm, cdp, 1133, job["job_id"])


@pytest.mark.parametrize("audit_kept", [True, False])
def test_a_retried_batch_counts_its_own_earlier_inserts_migrated(seed_cid, crm, cdp, audit_kept):
    """A page task that inserted a batch, then died before marking it done, is retried: the notes its earlier
    attempt inserted count migrated by this job (not already_migrated), as the retry's audit maps them; whether
    the earlier attempt wrote its audit or died before it. The page counters and the audit agree."""
    from notes_migration.domain import config as C

    cid = 1134 if audit_kept else 1135
    seed_cid(SeedSpec(cid=cid, notes=30, upload_files=False))
    job = _start(crm, cdp, cid, f"retried-{cid}")
    try:
        [first, *_] = [b for p in plan.plan(crm, cdp, job["job_id"]) for b in batches_of(p)]
        once = batch.migrate_batch(crm, cdp, job["job_id"], first)
        assert once["migrated"] > 0
        key = job_store.page_key(job["job_id"], first["page_no"])
        cdp[C.PAGES].update_one({"_id": key}, {"$set": {"state": "deciding"}})  # died before its final result
        if not audit_kept:
            cdp[C.AUDIT].delete_one({"_id": key})  # … or even before its audit
        again = batch.migrate_batch(crm, cdp, job["job_id"], first)
        assert (again["migrated"], again["already_migrated"]) == (once["migrated"], 0), again
        [result] = [r for r in job_store.page_results(cdp, job["job_id"]) if r["page_no"] == first["page_no"]]
        assert result["attempt"] == 2 and result["migrated"] == once["migrated"]
        audited = {i for a in cdp[C.AUDIT].find({"job_id": job["job_id"]}) for i in a["legacy_crm_note_ids"]}
        assert len(audited) == once["migrated"]
    finally:
        start.release(cdp, cid, f"retried-{cid}")
