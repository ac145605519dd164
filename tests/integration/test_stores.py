"""The I/O modules against the real servers: the writer seam, the per-CID lock, UTC reads.

CIDs used here: 1100–1109.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from devtools.seed import SeedSpec, company_for
from notes_migration.domain.codes import Halted
from notes_migration.domain.config import CONTACT_NOTES, NOTE_LOG, RunConfig
from notes_migration.run import batch, coverage, plan, start
from notes_migration.stores import cdp_store, crm_source, job_store
from tests.helpers import assert_conserved

pytestmark = pytest.mark.integration
COMPANY = company_for(1100)


def note(legacy, **extra):
    return {
        "company_sso_id": COMPANY,
        "contact_id": "c",
        "owner_id": None,
        "note": "<div>x</div>",
        "attachments": [],
        "created_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        "updated_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        "legacy_crm_note_id": legacy,
        **extra,
    }


@pytest.fixture
def clean_company(cdp):
    job_store.ensure_indexes(cdp)
    cdp[CONTACT_NOTES].delete_many({"company_sso_id": COMPANY})
    yield
    cdp[CONTACT_NOTES].delete_many({"company_sso_id": COMPANY})


def test_duplicate_key_is_already_migrated_and_other_errors_retry_once_then_fail(cdp, clean_company):
    writer = cdp_store.MongoNoteWriter(cdp)
    first = writer.write([note(1), note(2)])
    assert set(first.inserted) == {1, 2} and not first.errors
    calls = []
    original = writer.collection.insert_many

    def counting(docs, **kw):
        calls.append([d["legacy_crm_note_id"] for d in docs])
        return original(docs, **kw)

    writer.collection.insert_many = counting
    # a field name the server refuses: a write error that is not a duplicate key
    second = writer.write([note(1), note(3), note(4, **{"$bad": 1})])
    assert second.already_migrated == {1}
    assert set(second.inserted) == {3}
    assert list(second.errors) == [4] and not second.errors[4].startswith("11000")
    assert calls == [[1, 3, 4], [4]]  # the failed note was retried exactly once, alone
    assert cdp[CONTACT_NOTES].count_documents({"company_sso_id": COMPANY}) == 3


def test_a_null_legacy_id_is_never_written(cdp, clean_company):
    with pytest.raises(ValueError, match="legacy_crm_note_id"):
        cdp_store.MongoNoteWriter(cdp).write([note(None)])
    assert cdp[CONTACT_NOTES].count_documents({"company_sso_id": COMPANY}) == 0


def test_write_errors_become_batch_insert_failed_in_the_page_accounting(seed_cid, crm, cdp):
    seed_cid(SeedSpec(cid=1101, notes=40))
    cfg = RunConfig(cid=1101, company_sso_id=company_for(1101), force_rerun=True)
    job = start.start_job(crm, cdp, cfg, run_id="writer-test", triggered_by="test", flag_cids=[1101])
    try:
        coverage.run_coverage(crm, cdp, job["job_id"])
        page = plan.plan(crm, cdp, job["job_id"])[0]

        class Poisoning(cdp_store.MongoNoteWriter):
            def write(self, docs):
                docs[0]["$bad"] = 1  # the server refuses this one document
                return super().write(docs)

        with pytest.raises(Halted, match="FAILURE_RATE_EXCEEDED"):  # 1 of ~30 notes is > 1%
            batch.migrate_page(crm, cdp, job["job_id"], page, writer=Poisoning(cdp))
        (result,) = job_store.page_results(cdp, job["job_id"])
        failed = job_store.note_log(cdp, job["job_id"], outcome="failed")
        assert result["failed"] == 1 and [f["reason_code"] for f in failed] == ["BATCH_INSERT_FAILED"]
        assert result["migrated"] + result["skipped"] + result["failed"] == result["rows"]
        assert_conserved(crm, cdp, 1101, job["job_id"])  # the halted run: the rest of the CID not processed
    finally:
        job_store.release_lock(cdp, 1101, "writer-test")


def test_exactly_one_of_many_concurrent_runs_gets_the_lock(cdp):
    job_store.release_lock(cdp, 1102)
    winners, losers = [], []
    barrier = threading.Barrier(8)

    def contend(i):
        barrier.wait()
        try:
            job_store.acquire_lock(cdp, 1102, job_id=f"j{i}", run_id=f"r{i}", lease_seconds=3600)
            winners.append(i)
        except job_store.LockHeld:
            losers.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7
    assert job_store.get_lock(cdp, 1102)["run_id"] == f"r{winners[0]}"
    assert not job_store.release_lock(cdp, 1102, "someone-else")  # only the holder releases
    assert job_store.release_lock(cdp, 1102, f"r{winners[0]}")


def test_crm_timestamps_are_read_as_utc_whatever_the_session_time_zone(seed_cid, crm_rw):
    seed_cid(SeedSpec(cid=1103, notes=5))
    with crm_rw.cursor() as cur:
        cur.execute(
            "SELECT id, created_at FROM crm_notes WHERE organization_id = 1103 AND crm_person_id IS NOT NULL "
            "ORDER BY id LIMIT 1"
        )
        note_id, naive = cur.fetchone()
        cur.execute("SET TIME ZONE 'Asia/Tokyo'")
    try:
        row = next(r for r in crm_source.read_page(crm_rw, 1103, note_id, note_id))
        assert row.created_at == naive.replace(tzinfo=dt.UTC)
    finally:
        with crm_rw.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
        crm_rw.commit()


def test_partial_index_or_its_logged_fallback(cdp, caplog):
    if cdp_store.NOTE_KEY_NAME in cdp[CONTACT_NOTES].index_information():
        cdp[CONTACT_NOTES].drop_index(cdp_store.NOTE_KEY_NAME)  # so this test sees the creation and its log line
    report = job_store.ensure_indexes(cdp)
    info = cdp[CONTACT_NOTES].index_information()[cdp_store.NOTE_KEY_NAME]
    assert info.get("unique")
    if report["contact_notes"] == "plain unique":  # FerretDB v1 refuses partialFilterExpression
        assert "refused a partial index" in caplog.text
    else:
        assert info.get("partialFilterExpression") == {"legacy_crm_note_id": {"$exists": True}}


def test_stored_notes_finds_the_same_notes_by_equality_lookups_and_by_in(cdp, clean_company):
    """Few ids are looked up one by one (FerretDB pushes that equality down), many by one `$in`:
    both find exactly the company's notes among the ids, never another company's."""
    cdp_store.MongoNoteWriter(cdp).write([note(i) for i in range(1, 41)])
    other = company_for(1101)
    cdp[CONTACT_NOTES].delete_many({"company_sso_id": other})
    cdp[CONTACT_NOTES].insert_one({**note(5), "company_sso_id": other})
    try:
        projection = {"_id": 0, "legacy_crm_note_id": 1, "company_sso_id": 1}
        wanted = [3, 5, 7, 40, 41, 999]  # 41 and 999 are not stored
        absent = list(range(1000, 1000 + cdp_store.EQUALITY_LOOKUPS_UP_TO))
        assert len(wanted) <= cdp_store.EQUALITY_LOOKUPS_UP_TO < len(wanted + absent)
        few = cdp_store.stored_notes(cdp, COMPANY, wanted, projection)
        many = cdp_store.stored_notes(cdp, COMPANY, wanted + absent, projection)  # the `$in` path
    finally:
        cdp[CONTACT_NOTES].delete_many({"company_sso_id": other})
    for found in (few, many):
        assert sorted(d["legacy_crm_note_id"] for d in found) == [3, 5, 7, 40]
        assert {d["company_sso_id"] for d in found} == {COMPANY}


def test_replacing_a_pages_file_records_keeps_note_records_and_other_pages(cdp):
    """A relinked page's per-file records are replaced by its job_page key; the page's note-level records
    and the other page's file records stay."""
    job_store.ensure_indexes(cdp)
    job_id = "stores-test-attachment-log"
    cdp[NOTE_LOG].delete_many({"job_id": job_id})

    def entry(page: int, nid: int, outcome: str, ref: str = "") -> dict:
        return {
            "_id": f"{job_id}:{nid}:{ref or outcome}",
            "job_id": job_id,
            "job_page": f"{job_id}:{page}",
            "legacy_crm_note_id": nid,
            "outcome": outcome,
        }

    try:
        job_store.insert_note_log(
            cdp,
            [
                entry(0, 1, "failed"),
                entry(0, 1, "attachment_failed", "asset:1"),
                entry(0, 2, "attachment_skipped", "asset:2"),
                entry(1, 9, "attachment_failed", "asset:9"),
            ],
        )
        job_store.replace_attachment_logs(
            cdp, [entry(0, 2, "attachment_failed", "asset:3")], clear_pages=[f"{job_id}:0"]
        )
        left = sorted(e["_id"] for e in cdp[NOTE_LOG].find({"job_id": job_id}, {"_id": 1}))
    finally:
        cdp[NOTE_LOG].delete_many({"job_id": job_id})
    assert left == sorted([f"{job_id}:1:failed", f"{job_id}:2:asset:3", f"{job_id}:9:asset:9"])
