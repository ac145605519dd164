"""The halt holds with parallel pages (issue 10 item 2): four pages call migrate_page at once, on the real
CRM PostgreSQL and FerretDB, on a CID whose failures (unmapped persons) are spread over every page.

CIDs used here: 8010.
"""

from __future__ import annotations

import threading
import uuid

import pytest

from devtools.seed import SeedSpec, company_for
from notes_migration.domain.codes import AlreadyHalted, Halted, State
from notes_migration.domain.config import CONTACT_NOTES, RunConfig, Thresholds
from notes_migration.run import batch, coverage, plan, start
from notes_migration.stores import job_store
from tests.cids import cids
from tests.helpers import assert_conserved

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

[CID] = cids(__name__)
BATCH = 100


@pytest.fixture
def job(seed_cid, crm, cdp, monkeypatch):
    monkeypatch.setattr("notes_migration.run.plan.TARGET_TASK_PAGES", 8)  # one-batch pages: 8 of them
    seed_cid(SeedSpec(cid=CID, notes=800, unmapped_person_share=0.06, upload_files=False))
    cfg = RunConfig(
        cid=CID, company_sso_id=company_for(CID), batch_size=BATCH, thresholds=Thresholds(coverage_gate=0.5)
    )
    run_id = f"parallel-halt-{uuid.uuid4()}"
    job = start.start_job(crm, cdp, cfg, run_id=run_id, triggered_by="test", flag_cids=[CID])
    coverage.run_coverage(crm, cdp, job["job_id"])
    pages = plan.plan(crm, cdp, job["job_id"])
    assert len(pages) >= 8
    yield job, pages
    job_store.release_lock(cdp, CID, run_id)


def written(cdp) -> int:
    return cdp[CONTACT_NOTES].count_documents({"company_sso_id": company_for(CID), "legacy_crm_note_id": {"$gt": 0}})


def run_in_parallel(job, pages, crm_factory, cdp) -> dict[int, object]:
    """migrate_page of each page in its own thread (own CRM connection), all released at once."""
    start = threading.Barrier(len(pages))
    outcomes: dict[int, object] = {}

    def one(page):
        with crm_factory() as crm:
            start.wait()
            try:
                outcomes[page["page_no"]] = batch.migrate_page(crm, cdp, job["job_id"], page)
            except Halted as halted:
                outcomes[page["page_no"]] = halted

    threads = [threading.Thread(target=one, args=(p,)) for p in pages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def crm_factory():
    from notes_migration.stores.connections import crm_connection

    return crm_connection()


def check_accounting(cdp, job_id: str) -> list[dict]:
    """Every page accounts for every note; every decided failure is in the failed-record queue."""
    results = job_store.page_results(cdp, job_id)
    for r in results:
        assert r["state"] in ("done", "halted")
        assert r["migrated"] + r["already_migrated"] + r["failed"] + r["skipped"] == r["rows"]
        if r["state"] == "halted":  # what it would have written is skipped, reason-coded, in the note log
            withheld = r["skipped_by_reason"]["FAILURE_RATE_EXCEEDED"]
            assert r["migrated"] == 0 and r["failed"] > 0 and withheld == r["withheld_by_halt"] > 0
            assert r["attempted"] == r["failed"]
    halted_log = [
        e for e in job_store.note_log(cdp, job_id, outcome="skipped") if e["reason_code"] == "FAILURE_RATE_EXCEEDED"
    ]
    assert len(halted_log) == sum(r.get("withheld_by_halt", 0) for r in results)
    failed_log = job_store.note_log(cdp, job_id, outcome="failed")
    assert len(failed_log) == sum(r["failed"] for r in results)
    assert {f["reason_code"] for f in failed_log} == {"CONTACT_NOT_MAPPED"}
    assert written(cdp) == sum(r["migrated"] for r in results)
    with crm_factory() as crm:
        assert_conserved(crm, cdp, CID, job_id)
    return results


def test_four_parallel_pages_that_all_decide_before_any_checks_write_nothing(job, cdp, crm, monkeypatch):
    job, pages = job
    first, rest = pages[:4], pages[4:]
    # worst case for a halt: all four pages have published their decisions before any re-checks
    published = threading.Barrier(4)
    begin = job_store.begin_page

    def begin_then_wait(db, provisional):
        previous = begin(db, provisional)
        published.wait()
        return previous

    monkeypatch.setattr(job_store, "begin_page", begin_then_wait)
    outcomes = run_in_parallel(job, first, crm_factory, cdp)
    assert all(isinstance(o, Halted) for o in outcomes.values()), outcomes
    stored = job_store.get_job(cdp, job["job_id"])
    assert stored["state"] == State.HALTED and stored["halted"]["reason"] == "FAILURE_RATE_EXCEEDED"
    results = check_accounting(cdp, job["job_id"])
    assert all(r["failed"] > 0 for r in results)  # the failures are spread over every page
    assert written(cdp) == 0
    monkeypatch.setattr(job_store, "begin_page", begin)
    for page in rest:  # pages after the halt read and write nothing
        with pytest.raises(AlreadyHalted):
            batch.migrate_page(crm, cdp, job["job_id"], page)
    assert written(cdp) == 0 and len(job_store.page_results(cdp, job["job_id"])) == 4


def test_four_parallel_pages_free_interleaving_at_most_the_inserts_already_under_way(job, cdp, crm):
    job, pages = job
    first, rest = pages[:4], pages[4:]
    outcomes = run_in_parallel(job, first, crm_factory, cdp)
    stored = job_store.get_job(cdp, job["job_id"])
    assert stored["state"] == State.HALTED and stored["halted"]["reason"] == "FAILURE_RATE_EXCEEDED"
    results = check_accounting(cdp, job["job_id"])
    assert all(r["failed"] > 0 for r in results)
    inserted = [r for r in results if r["state"] == "done"]
    halted = [r for r in results if r["state"] == "halted"]
    # the last page to re-check sees all four decisions (~6% failed): at least one page halts instead of writing
    assert halted and len(inserted) <= 3
    assert sum(isinstance(o, Halted) for o in outcomes.values()) >= len(halted)
    before = written(cdp)
    assert before == sum(r["migrated"] for r in inserted) <= 3 * BATCH
    for page in rest:  # nothing more is written after the halt
        with pytest.raises(AlreadyHalted):
            batch.migrate_page(crm, cdp, job["job_id"], page)
    assert written(cdp) == before
