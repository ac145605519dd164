"""The same end-to-end scenarios (dag.test(), conservation checked after every run by run_dag) on both writers of
the writer seam, MongoDB directly and the CDP notes API (PRD D-1; conftest's `writer` fixture): a clean run and
a re-run that inserts nothing, the write failing for good (BATCH_INSERT_FAILED, the 1% halt) then, on the
re-run, failing once (retried), the S2S token refused (401: refused at preconditions, or halted mid-run),
and a slow endpoint (a timeout retried).

CIDs used here: 9400–9419 (even: the mongo writer, odd: the http writer).
"""

from __future__ import annotations

import pytest

from devtools.seed import SeedSpec
from notes_migration.domain import config as C
from notes_migration.domain.codes import Reason
from notes_migration.domain.config import job_id_for
from notes_migration.ops.queries import cid_status
from notes_migration.stores import job_store
from tests.helpers import PARAM_DEFAULTS
from tests.writers import Writer

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SMALL = dict(notes=20, image_share=0.1, audio_share=0.0, document_share=0.0, unsupported_file_share=0.0)
SMALL_NO_FILES = dict(SMALL, image_share=0.0, upload_files=False)


def cid_for(base: int, writer: Writer) -> int:
    return base + (1 if writer.name == "http" else 0)


def conf(spec: SeedSpec, **kw) -> dict:
    return {**PARAM_DEFAULTS, "cid": spec.cid, "company_sso_id": spec.company_sso_id, "batch_size": 50, **kw}


def in_cdp(cdp, spec: SeedSpec) -> set[int]:
    q = {"company_sso_id": spec.company_sso_id, "legacy_crm_note_id": {"$exists": True}}
    return {d["legacy_crm_note_id"] for d in cdp[C.CONTACT_NOTES].find(q, {"legacy_crm_note_id": 1})}


def page_sums(cdp, dag_run, cid: int) -> dict[str, int]:
    pages = job_store.page_results(cdp, job_id_for(dag_run.run_id, cid))
    return {k: sum(p.get(k, 0) for p in pages) for k in ("migrated", "already_migrated", "failed", "skipped")}


def test_a_run_then_a_rerun_that_inserts_nothing(writer, seed_cid, run_dag, cdp):
    spec = SeedSpec(cid=cid_for(9400, writer), **SMALL)
    seed_cid(spec)
    first = run_dag(conf(spec), settings=writer.settings)
    status = cid_status(cdp, spec.cid)
    assert status["status"] == "completed_success", status
    assert status["validation"]["match_pct"] == 100.0 and status["validation"]["content_mismatches"] == 0
    assert status["validation"]["read"]["writer"] == writer.name
    stored = in_cdp(cdp, spec)
    assert len(stored) == status["notes_migrated"] == page_sums(cdp, first, spec.cid)["migrated"] > 0
    job = job_store.get_job(cdp, job_id_for(first.run_id, spec.cid))
    assert job["config"]["thresholds"]["writer"] == writer.name  # the snapshot records the writer
    relinked = status["attachments"]["relinked"]
    assert relinked > 0  # files set on the notes through the writer's path
    with_files = cdp[C.CONTACT_NOTES].count_documents(
        {"company_sso_id": spec.company_sso_id, "attachments.legacy_crm_file": {"$exists": True}}
    )
    assert with_files > 0

    again = run_dag(conf(spec, force_rerun=True), settings=writer.settings)
    sums = page_sums(cdp, again, spec.cid)
    assert sums["migrated"] == 0 and sums["already_migrated"] == len(stored)  # a re-run inserts nothing
    assert in_cdp(cdp, spec) == stored
    assert cid_status(cdp, spec.cid)["status"] == "completed_success"


def test_a_write_failing_for_good_then_failing_once(writer, seed_cid, run_dag, cdp):
    """Failing for good: the batch's notes fail BATCH_INSERT_FAILED and the 1% rule halts the run. Then a re-run
    whose first write fails once: retried, every note inserted."""
    spec = SeedSpec(cid=cid_for(9404, writer), **SMALL_NO_FILES)
    seed_cid(spec)
    writer.faults.fail_always = True
    run_dag(conf(spec), settings=writer.settings)
    status = cid_status(cdp, spec.cid)
    assert status["status"] == "halted" and status["halted_reason"] == Reason.FAILURE_RATE_EXCEEDED, status
    assert status["counts"]["failed"].get(Reason.BATCH_INSERT_FAILED, 0) > 0
    assert in_cdp(cdp, spec) == set()

    writer.faults.reset()
    writer.faults.fail_next = 1
    run_dag(conf(spec), settings=writer.settings)
    status = cid_status(cdp, spec.cid)
    assert status["status"] == "completed_success", status
    assert status["counts"]["failed"] == {}
    assert writer.faults.fail_next == 0 and len(writer.faults.seen) >= 2  # the failed write was retried
    assert len(in_cdp(cdp, spec)) == status["notes_migrated"]


def test_a_refused_token_refuses_the_run_or_halts_it(writer, seed_cid, run_dag, cdp, monkeypatch):
    writer.skip_unless_http("no token on the Mongo path")
    assert writer.api is not None
    spec = SeedSpec(cid=cid_for(9406, writer), **SMALL_NO_FILES)
    seed_cid(spec)
    with monkeypatch.context() as mp:  # a wrong token: refused at preconditions, nothing written
        mp.setenv("AIRFLOW_CONN_CDP_NOTES_API", writer.api.connection(token="not-the-token"))
        refused = run_dag(conf(spec), settings=writer.settings)
    assert str(refused.state) == "failed"
    assert job_store.get_job(cdp, job_id_for(refused.run_id, spec.cid)) is None
    assert in_cdp(cdp, spec) == set()

    writer.faults.unauthorized = True  # the token is revoked after preconditions: the first batch halts the run
    run_dag(conf(spec), settings=writer.settings)
    status = cid_status(cdp, spec.cid)
    assert status["status"] == "halted" and status["halted_reason"] == Reason.CDP_API_UNAUTHORIZED, status
    assert status["counts"]["failed"] == {}
    assert in_cdp(cdp, spec) == set()


def test_a_slow_endpoint_times_out_and_is_retried(writer, seed_cid, run_dag, cdp):
    writer.skip_unless_http("the Mongo writer has no request timeout")
    spec = SeedSpec(cid=cid_for(9408, writer), **SMALL_NO_FILES)
    seed_cid(spec)
    writer.faults.slow_next, writer.faults.delay = 1, 2.0  # the writer's timeout is 1 s
    run_dag(conf(spec), settings=writer.settings)
    status = cid_status(cdp, spec.cid)
    assert status["status"] == "completed_success", status
    assert status["counts"]["failed"] == {}
    assert len(in_cdp(cdp, spec)) == status["validation"]["found"]
