"""Every reason code of the vocabulary (codes.Reason), provoked through the whole DAG (dag.test()) or through the
Ops action that owns it (the plugin's trigger, cancel, retry and rollback POSTs, a real API server app with real
JWTs), and seen where Ops sees it: the status JSON, the job's error log, a refusal's body, or, for a run its
preconditions refuse before it records a job, the run's task log.

Each scenario below is a module fixture that returns what it saw (`Sightings`: code → where), read back from
those surfaces, never from the code that emitted it. `test_every_reason_code_is_provoked` asks for every
scenario and fails when a member of `Reason` is neither seen nor on the short, commented list of codes that
cannot be provoked locally (`UNPROVOKABLE`): a new code needs a scenario here. Every dag.test() run is checked
for conservation (tests/helpers.run_migration → assert_conserved).

Faults are real: the CRM or the MongoDB-compatible server goes away behind a TCP proxy (devtools/tcp_proxy.py)
at a chosen step, as tests/fault/test_fault_injection.py does; a missing CDP bucket makes every upload fail.

CIDs used here: 6500–6506 (6599 is never seeded).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from devtools.seed import SeedSpec, company_for
from devtools.tcp_proxy import TcpProxy
from notes_migration.domain import config as C
from notes_migration.domain.codes import RUN_ERROR_OUTCOME, Reason
from notes_migration.domain.config import RunConfig, Thresholds
from notes_migration.run import batch, start, validate
from notes_migration.stores import cdp_store, connections, job_store
from tests.cids import cids
from tests.helpers import ops_api_app, point_connection, run_migration, task_states
from tests.plugin.plugin_support import JWT_SECRET, PREFIX, USERS

CIDS = cids(__name__)  # 6500–6507, 6599
pytestmark = [pytest.mark.integration, pytest.mark.e2e]

# Codes no local scenario can provoke, and why. Keep this as short as the truth allows: a code listed here that a
# scenario does see fails the completeness test (take it off the list).
UNPROVOKABLE: dict[Reason, str] = {
    # transform.decide's guard around html.normalise: normalise never raises for a note's content (what it cannot
    # sanitise within its bounds, depth, attribute count or no fixed point, it flattens to text: HTML_FLATTENED_TO_TEXT
    # below), and the sanitiser corpora and the property test hold it to that. Only a bug in the sanitiser reaches
    # this code; tests/unit/test_sanitiser_decide.py checks the guard by making normalise raise.
    Reason.HTML_NORMALISATION_FAILED: "only a sanitiser bug (an exception inside html.normalise) emits it",
}

NO_FILES = dict(image_share=0.0, audio_share=0.0, document_share=0.0, unsupported_file_share=0.0, upload_files=False)
FAST_CRM_RETRIES = {"crm_retry_backoff_seconds": 0.1}


# --------------------------------------------------------------------------- what Ops saw


@dataclass
class Sightings:
    """code → the Ops surfaces it was seen on (only members of Reason are kept)."""

    seen: dict[Reason, set[str]] = field(default_factory=dict)

    def add(self, code: Any, where: str) -> None:
        if isinstance(code, str) and code in Reason.__members__:
            self.seen.setdefault(Reason(code), set()).add(where)

    def status(self, status: dict[str, Any]) -> dict[str, Any]:
        """Every reason code in a status JSON: the halt, failures and skips by reason, files, validation."""
        cid = status["cid"]
        self.add(status.get("halted_reason"), f"GET status?cid={cid} halted_reason")
        counts = status.get("counts") or {}
        for key in ("failed", "out_of_scope", "withheld_by_halt", "contacts_skipped"):
            for code in counts.get(key) or {}:
                self.add(code, f"GET status?cid={cid} counts.{key}")
        attachments = status.get("attachments") or {}
        for key in ("failed_by_reason", "skipped_by_reason"):
            for code in attachments.get(key) or {}:
                self.add(code, f"GET status?cid={cid} attachments.{key}")
        self.add((status.get("validation") or {}).get("skipped"), f"GET status?cid={cid} validation.skipped")
        return status

    def error_log(self, job_id: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for e in entries:
            self.add(e.get("reason_code"), f"GET jobs/{{id}}/errors row ({e.get('outcome')})")
        return entries

    def refusal(self, what: str, resp: Any) -> dict[str, Any]:
        body = resp.json()
        self.add(body.get("reason_code"), f"{what} → HTTP {resp.status_code}")
        return body

    def task_log(self, text: str, run: str) -> None:
        for code in Reason:
            if f"{code.value}:" in text:  # Refused/Halted messages read "<CODE>: <why>"
                self.add(code.value, f"task log of {run}")


@dataclass
class Scenario:
    sightings: Sightings
    data: dict[str, Any] = field(default_factory=dict)


class OpsApi:
    """The plugin's routes on a real API server app, as an operator with a real JWT calls them."""

    def __init__(self, client: Any, token: str):
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(f"{PREFIX}{path}", params=params, headers=self.headers)

    def post(self, path: str, json_body: Any = None, **params: Any) -> Any:
        return self.client.post(f"{PREFIX}{path}", json=json_body, params=params, headers=self.headers)

    def status(self, seen: Sightings, cid: int) -> dict[str, Any]:
        resp = self.get("/api/status", cid=cid)
        assert resp.status_code == 200, resp.text
        return seen.status(resp.json())

    def errors(self, seen: Sightings, job_id: str, outcome: str = "all") -> list[dict[str, Any]]:
        resp = self.get(f"/api/jobs/{job_id}/errors", format="json", outcome=outcome)
        assert resp.status_code == 200, resp.text
        return seen.error_log(job_id, resp.json()["entries"])


@pytest.fixture(scope="module")
def ops(tmp_path_factory) -> Iterator[OpsApi]:
    from fastapi.testclient import TestClient

    with ops_api_app(USERS, JWT_SECRET, tmp_path_factory.mktemp("auth") / "passwords.json") as app:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            resp = client.post("/auth/token", json={"username": "ops", "password": USERS["ops"][0]})
            assert resp.status_code == 201, resp.text
            yield OpsApi(client, resp.json()["access_token"])


@pytest.fixture(scope="module")
def run(migration_dag, crm, cdp):
    """dag.test() of one CID, flag and settings Variables set for that run only; conservation checked after it."""

    def _run(conf: dict, *, flag: list[int] | None = None, settings: dict | None = None):
        with pytest.MonkeyPatch.context() as mp:
            conf = {"company_sso_id": company_for(conf["cid"]), **conf}
            return run_migration(migration_dag, mp, conf, crm=crm, cdp=cdp, flag=flag, settings=settings)

    return _run


@contextmanager
def task_logs() -> Iterator[list[str]]:
    """The log lines the run's tasks write (dag.test() runs them in this process)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(level=logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lines
    finally:
        root.removeHandler(handler)


def mapped_person(seeded: dict, cid: int) -> int:
    """A CRM person of the seeded CID that has a CDP contact."""
    unmapped = set(seeded["unmapped_person_ids"])
    return next(p for p in range(cid * 100_000, cid * 100_000 + seeded["persons"]) if p not in unmapped)


def job_of(cdp, cid: int) -> str:
    job = cdp[C.JOBS].find_one({"cid": cid, "config.dry_run": False}, sort=[("created_at", -1)])
    assert job is not None, f"CID {cid} recorded no job"
    return job["_id"]


# --------------------------------------------------------------------------- per-note and per-file codes (one CID)

SINK = CIDS[0]
SINK_BASE = SINK * 1_000_000 + 900
TOO_LARGE_NOTE = SINK_BASE + 1  # raw HTML over the 512 KiB cap
NESTED_NOTE = SINK_BASE + 2  # nesting beyond html.MAX_DEPTH: migrated as its escaped text


@pytest.fixture(scope="module")
def per_note_codes(seed_cid, crm_rw, cdp, run, ops) -> Scenario:
    """One run of a CID holding every per-note and per-file outcome but an upload failure: unmapped persons
    (CONTACT_NOT_MAPPED), company notes (NOT_A_PERSON_NOTE), activities (ACTIVITY_OUT_OF_SCOPE), check-ins
    (CHECKIN_DROPPED), a 600 KB note (NOTE_TOO_LARGE), 300 nested divs (HTML_FLATTENED_TO_TEXT), and files that are
    missing (ATTACHMENT_DOWNLOAD_FAILED), over 25 MB (ATTACHMENT_TOO_LARGE), or executables / HEIC under an
    allowlisted name or their own (ATTACHMENT_UNSUPPORTED_TYPE). Gates lowered so the run goes to the end."""
    spec = SeedSpec(
        cid=SINK,
        notes=80,
        unmapped_person_share=0.2,
        no_person_share=0.1,
        checkin_share=0.15,
        image_share=0.4,
        audio_share=0.2,
        document_share=0.4,
        unsupported_file_share=0.15,
        missing_file_share=0.15,
        disguised_file_share=0.1,
        oversized_file_share=0.1,
    )
    seeded = seed_cid(spec)
    person = mapped_person(seeded, SINK)
    at = dt.datetime(2021, 3, 4, 5, 6, 7, 890123)
    with crm_rw.cursor() as cur:
        for note_id, html in (
            (TOO_LARGE_NOTE, "<div>" + "lorem ipsum " * 50_000 + "</div>"),
            (NESTED_NOTE, "<div>" * 300 + "Deal <b>closed</b>" + "</div>" * 300),
        ):
            cur.execute(
                "INSERT INTO crm_notes VALUES (%s, %s, 'Crm::PersonNote', %s, %s, NULL, NULL, NULL, NULL, 1, %s, %s)",
                (note_id, SINK, html, person, at, at),
            )
    crm_rw.commit()
    dag_run = run({"cid": SINK, "batch_size": 50}, settings={"coverage_gate": 0.5, "max_failure_rate": 0.5})
    seen = Sightings()
    status = ops.status(seen, SINK)
    entries = ops.errors(seen, status["job_id"])
    return Scenario(seen, {"dag_run": dag_run, "status": status, "entries": entries})


def test_per_note_and_per_file_codes_reach_the_status_and_the_error_log(per_note_codes):
    status, entries = per_note_codes.data["status"], per_note_codes.data["entries"]
    states = task_states(per_note_codes.data["dag_run"])
    assert set(states["migrate_page"]) == {"success"} and set(states["relink_attachments"]) == {"success"}, states
    assert status["status"] == "completed_with_errors"  # the unmapped persons' notes are not in CDP
    counts = status["counts"]
    assert set(counts["failed"]) == {"CONTACT_NOT_MAPPED", "NOTE_TOO_LARGE"} and counts["failed"]["NOTE_TOO_LARGE"] == 1
    assert {"NOT_A_PERSON_NOTE", "ACTIVITY_OUT_OF_SCOPE"} <= set(counts["out_of_scope"])
    files = status["attachments"]
    assert set(files["failed_by_reason"]) == {"ATTACHMENT_DOWNLOAD_FAILED"}
    assert set(files["skipped_by_reason"]) == {"ATTACHMENT_TOO_LARGE", "ATTACHMENT_UNSUPPORTED_TYPE"}
    by_note = {(e["legacy_crm_note_id"], e["reason_code"]): e for e in entries}
    assert by_note[(TOO_LARGE_NOTE, "NOTE_TOO_LARGE")]["outcome"] == "failed"
    flattened = by_note[(NESTED_NOTE, "HTML_FLATTENED_TO_TEXT")]
    assert flattened["outcome"] == "migrated" and "nested deeper" in flattened["details"]
    assert any(e["reason_code"] == "CHECKIN_DROPPED" and e["outcome"] == "migrated" for e in entries)
    assert {e["reason_code"] for e in entries if e["outcome"] == "attachment_failed"} == {"ATTACHMENT_DOWNLOAD_FAILED"}
    assert {e["reason_code"] for e in entries if e["outcome"] == "attachment_skipped"} == {
        "ATTACHMENT_TOO_LARGE",
        "ATTACHMENT_UNSUPPORTED_TYPE",
    }


# --------------------------------------------------------------------------- an upload failure; refusals of a done CID

DONE = CIDS[5]


@pytest.fixture(scope="module")
def done_cid_codes(seed_cid, cdp, run, ops) -> Scenario:
    """A CID migrated to completed_success while its CDP bucket does not exist (every copy fails:
    ATTACHMENT_UPLOAD_FAILED), then what Ops is refused on it: a new run (ALREADY_MIGRATED), a retry of a job with
    no failed note (NOTHING_TO_RETRY), a rollback after one of its notes was edited in CDP (ROLLBACK_REFUSED)."""
    spec = SeedSpec(
        cid=DONE,
        notes=30,
        image_share=0.5,
        document_share=0.3,
        audio_share=0.0,
        unsupported_file_share=0.0,
        missing_file_share=0.0,
        mislabelled_file_share=0.0,
        disguised_file_share=0.0,
        oversized_file_share=0.0,
    )
    seed_cid(spec)
    with pytest.MonkeyPatch.context() as mp:
        point_connection(mp, C.CDP_S3_CONN_ID, extra={"bucket": f"cdp-files-missing-{DONE}"})
        dag_run = run({"cid": DONE})
    seen = Sightings()
    status = ops.status(seen, DONE)
    job_id = status["job_id"]
    entries = ops.errors(seen, job_id)
    refusals = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_VAR_CRM_NOTES_MIGRATION_ENABLED", json.dumps([DONE]))
        refusals["trigger"] = ops.post("/api/jobs", {"cid": DONE, "company_sso_id": spec.company_sso_id})
        seen.refusal("POST /api/jobs", refusals["trigger"])
    refusals["retry"] = ops.post(f"/api/jobs/{job_id}/retry")
    seen.refusal("POST /api/jobs/{id}/retry", refusals["retry"])
    edited = cdp[C.CONTACT_NOTES].find_one({"company_sso_id": spec.company_sso_id, "legacy_crm_note_id": {"$gt": 0}})
    cdp[C.CONTACT_NOTES].update_one({"_id": edited["_id"]}, {"$set": {"note": edited["note"] + "<div>edited</div>"}})
    refusals["rollback"] = ops.post(f"/api/cids/{DONE}/rollback")  # a dry run: refused the same way
    seen.refusal("POST /api/cids/{cid}/rollback", refusals["rollback"])
    data = {"dag_run": dag_run, "status": status, "entries": entries, "refusals": refusals, "edited": edited}
    return Scenario(seen, data)


def test_upload_failure_and_the_refusals_of_a_migrated_cid(done_cid_codes, cdp):
    status, refusals = done_cid_codes.data["status"], done_cid_codes.data["refusals"]
    assert status["status"] == "completed_success" and status["validation"]["match_pct"] == 100.0
    assert set(status["attachments"]["failed_by_reason"]) == {"ATTACHMENT_UPLOAD_FAILED"}
    assert status["attachments"]["failed"] == status["attachments"]["total"] > 0
    assert {e["reason_code"] for e in done_cid_codes.data["entries"] if e["outcome"] == "attachment_failed"} == {
        "ATTACHMENT_UPLOAD_FAILED"
    }
    body = refusals["trigger"].json()
    assert (refusals["trigger"].status_code, body["reason_code"]) == (409, "ALREADY_MIGRATED")
    assert (refusals["retry"].status_code, refusals["retry"].json()["reason_code"]) == (409, "NOTHING_TO_RETRY")
    rollback = refusals["rollback"].json()
    assert (refusals["rollback"].status_code, rollback["reason_code"]) == (409, "ROLLBACK_REFUSED")
    edited = done_cid_codes.data["edited"]
    assert [c["legacy_crm_note_id"] for c in rollback["changed_in_cdp"]] == [edited["legacy_crm_note_id"]]
    assert cdp[C.CONTACT_NOTES].count_documents({"company_sso_id": company_for(DONE)}) > 0  # nothing rolled back


# --------------------------------------------------------------------------- halts: coverage, insert failures


COVERAGE = CIDS[1]
INSERTS = CIDS[2]


@pytest.fixture(scope="module")
def coverage_halt(seed_cid, cdp, run, ops) -> Scenario:
    """30% of the persons have no contact: the coverage gate (99%) halts the run before any write. One CDP contact
    has a list for `crm_data`: skipped as CONTACT_MALFORMED and counted in the coverage report."""
    seed_cid(SeedSpec(cid=COVERAGE, notes=60, unmapped_person_share=0.3, **NO_FILES))
    valid = cdp[C.CONTACTS].find_one({"company_sso_id": company_for(COVERAGE), "crm_data.id": {"$exists": True}})
    person = valid["crm_data"]["id"]
    malformed = {**valid, "_id": f"malformed-{COVERAGE}", "crm_data": [{"id": person}]}
    cdp[C.CONTACTS].insert_one({**malformed, "source": "crm", "source_id": str(person)})
    dag_run = run({"cid": COVERAGE})
    seen = Sightings()
    status = ops.status(seen, COVERAGE)
    entries = ops.errors(seen, status["job_id"], outcome="errors")
    return Scenario(seen, {"dag_run": dag_run, "status": status, "entries": entries})


def test_coverage_halt_lists_each_unmapped_person(coverage_halt):
    status, entries = coverage_halt.data["status"], coverage_halt.data["entries"]
    assert (status["status"], status["halted_reason"]) == ("halted", "COVERAGE_BELOW_GATE")
    assert task_states(coverage_halt.data["dag_run"])["coverage_preflight"] == ["failed"]
    persons = [e for e in entries if e["reason_code"] == "COVERAGE_BELOW_GATE"]
    assert persons and all(e["outcome"] == RUN_ERROR_OUTCOME and e["crm_person_id"] for e in persons)
    assert len(persons) == status["coverage"]["persons_unmapped"]
    assert status["coverage"]["contacts_skipped_by_reason"] == {"CONTACT_MALFORMED": 1}
    assert status["counts"]["contacts_skipped"] == {"CONTACT_MALFORMED": 1}


@pytest.fixture(scope="module")
def insert_failure_halt(seed_cid, cdp, run, ops) -> Iterator[Scenario]:
    """The MongoDB-compatible server goes away (its TCP proxy stops) for the first page's insert and its retry:
    that batch is BATCH_INSERT_FAILED, which puts the run over 1% failures: FAILURE_RATE_EXCEEDED."""
    seed_cid(SeedSpec(cid=INSERTS, notes=60, **NO_FILES))
    real = cdp_store.MongoNoteWriter.write
    writes: list[int] = []
    with TcpProxy(int(os.environ.get("CDP_MONGO_PORT", 27117))) as proxy, pytest.MonkeyPatch.context() as mp:
        point_connection(
            mp,
            C.CDP_MONGO_CONN_ID,
            port=proxy.port,
            extra={"serverSelectionTimeoutMS": 2000, "connectTimeoutMS": 2000},
        )

        def server_away_for_the_first_insert(self, docs):
            writes.append(len(docs))
            if len(writes) > 1:
                return real(self, docs)
            proxy.stop()  # the attempt and its retry both meet a closed port
            try:
                return real(self, docs)
            finally:
                proxy.start()

        mp.setattr(cdp_store.MongoNoteWriter, "write", server_away_for_the_first_insert)
        connections._mongo_client.cache_clear()  # the DAG's tasks get a client through the proxy
        try:
            dag_run = run({"cid": INSERTS, "batch_size": 20})
        finally:
            connections._mongo_client.cache_clear()
    seen = Sightings()
    status = ops.status(seen, INSERTS)
    entries = ops.errors(seen, status["job_id"])
    yield Scenario(seen, {"dag_run": dag_run, "status": status, "entries": entries, "writes": writes})


def test_insert_failures_halt_the_run(insert_failure_halt):
    status, entries = insert_failure_halt.data["status"], insert_failure_halt.data["entries"]
    assert insert_failure_halt.data["writes"], "no insert was attempted"
    assert (status["status"], status["halted_reason"]) == ("halted", "FAILURE_RATE_EXCEEDED")
    failed = [e for e in entries if e["outcome"] == "failed"]
    assert failed and {e["reason_code"] for e in failed} == {"BATCH_INSERT_FAILED"}
    assert len(failed) == insert_failure_halt.data["writes"][0] == status["counts"]["failed"]["BATCH_INSERT_FAILED"]
    assert "migrate_page" in task_states(insert_failure_halt.data["dag_run"])


# --------------------------------------------------------------------------- the CRM goes away: mid-run, at validation

CRM_DOWN = CIDS[3]


@pytest.fixture(scope="module")
def crm_down(seed_cid, run, ops) -> Scenario:
    """Run 1: the CRM stops after the first page (its TCP proxy closes); the next page's read fails after its
    retries: CRM_EXTRACT_FAILED. Run 2 (the CID is halted, so it may run again): the CRM stops just before
    validation counts the source: VALIDATION_SKIPPED."""
    seed_cid(SeedSpec(cid=CRM_DOWN, notes=120, **NO_FILES))
    seen = Sightings()
    data: dict[str, Any] = {}
    with TcpProxy(int(os.environ.get("CRM_PG_PORT", 54329))) as proxy, pytest.MonkeyPatch.context() as mp:
        point_connection(mp, C.CRM_POSTGRES_CONN_ID, port=proxy.port)
        real_page, real_validate = batch.migrate_page, validate.validate

        def page_then_crm_stops(*args, **kwargs):
            out = real_page(*args, **kwargs)
            proxy.stop()
            return out

        mp.setattr(batch, "migrate_page", page_then_crm_stops)
        data["run1"] = run({"cid": CRM_DOWN, "batch_size": 40}, settings=FAST_CRM_RETRIES)
        proxy.start()  # the API server reads the CRM through the same connection
        data["status1"] = ops.status(seen, CRM_DOWN)
        data["entries1"] = ops.errors(seen, data["status1"]["job_id"], outcome="errors")
        mp.setattr(batch, "migrate_page", real_page)

        def crm_stops_then_validate(*args, **kwargs):
            proxy.stop()
            return real_validate(*args, **kwargs)

        mp.setattr(validate, "validate", crm_stops_then_validate)
        data["run2"] = run({"cid": CRM_DOWN, "batch_size": 40}, settings=FAST_CRM_RETRIES)
        proxy.start()
    data["status2"] = ops.status(seen, CRM_DOWN)
    data["entries2"] = ops.errors(seen, data["status2"]["job_id"], outcome="errors")
    return Scenario(seen, data)


def test_crm_failures_mid_run_and_at_validation(crm_down):
    d = crm_down.data
    assert (d["status1"]["status"], d["status1"]["halted_reason"]) == ("halted", "CRM_EXTRACT_FAILED")
    run_errors = [e for e in d["entries1"] if e["outcome"] == RUN_ERROR_OUTCOME]
    assert [e["reason_code"] for e in run_errors] == ["CRM_EXTRACT_FAILED"] and "migrate_page" in run_errors[0][
        "details"
    ]
    assert d["status2"]["status"] == "completed_with_errors"
    assert d["status2"]["validation"]["skipped"] == "VALIDATION_SKIPPED"
    assert [e["reason_code"] for e in d["entries2"] if e["outcome"] == RUN_ERROR_OUTCOME] == ["VALIDATION_SKIPPED"]
    assert d["status2"]["job_id"] != d["status1"]["job_id"]


# --------------------------------------------------------------------------- refusals before a job exists

REFUSED = CIDS[4]
UNKNOWN = CIDS[-1]  # 6599, never seeded


@pytest.fixture(scope="module")
def refused_runs(seed_cid, run, ops, reference_api) -> Scenario:
    """Runs the preconditions refuse (nothing written, no job): the flag is off (FLAG_DISABLED), a company id
    with a trailing newline, which the params' JSON-schema pattern lets through (INVALID_COMPANY_SSO_ID). Ops sees
    the code in the task log, and the status reports the dead run (RUN_FAILED). The trigger POST refuses the flag
    (FLAG_DISABLED) and a CID the CRM does not know (CID_NOT_FOUND); a rollback of a CID with nothing migrated is
    NOTHING_TO_ROLL_BACK. On the HTTP write path, a token the CDP notes API refuses (401) refuses the run before it
    writes anything (CDP_API_UNAUTHORIZED)."""
    seed_cid(SeedSpec(cid=REFUSED, notes=10, **NO_FILES))
    seen = Sightings()
    data: dict[str, Any] = {}
    with task_logs() as lines:
        data["flag_off"] = run({"cid": REFUSED}, flag=[])
    seen.task_log("\n".join(lines), "a flag-off run")
    data["flag_off_log"] = lines
    with task_logs() as lines:
        data["bad_company"] = run({"cid": REFUSED, "company_sso_id": company_for(REFUSED) + "\n"})
    seen.task_log("\n".join(lines), "a run with a malformed company_sso_id")
    data["bad_company_log"] = lines
    with task_logs() as lines, pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_CDP_NOTES_API", reference_api.connection(token="revoked"))
        data["bad_token"] = run({"cid": REFUSED}, settings={"writer": "http"})
    seen.task_log("\n".join(lines), "a run on the HTTP path whose S2S token the CDP notes API refuses")
    data["bad_token_log"] = lines
    data["status"] = ops.status(seen, REFUSED)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_VAR_CRM_NOTES_MIGRATION_ENABLED", json.dumps([UNKNOWN]))
        data["flag"] = ops.post("/api/jobs", {"cid": REFUSED, "company_sso_id": company_for(REFUSED)})
        seen.refusal("POST /api/jobs", data["flag"])
        data["unknown"] = ops.post("/api/jobs", {"cid": UNKNOWN, "company_sso_id": company_for(UNKNOWN)})
        seen.refusal("POST /api/jobs", data["unknown"])
    data["rollback"] = ops.post(f"/api/cids/{REFUSED}/rollback")
    seen.refusal("POST /api/cids/{cid}/rollback", data["rollback"])
    return Scenario(seen, data)


def test_refused_runs_and_requests(refused_runs, cdp):
    d = refused_runs.data
    for key in ("flag_off", "bad_company", "bad_token"):
        assert task_states(d[key])["preconditions"] == ["failed"]
    assert any("CDP_API_UNAUTHORIZED" in line and "401" in line for line in d["bad_token_log"])
    assert any("FLAG_DISABLED: feature flag is OFF" in line for line in d["flag_off_log"])
    assert any("INVALID_COMPANY_SSO_ID: company_sso_id" in line for line in d["bad_company_log"])
    assert cdp[C.JOBS].count_documents({"cid": REFUSED}) == 0  # refused: nothing written
    status = d["status"]
    assert (status["status"], status["halted_reason"]) == ("halted", "RUN_FAILED")
    assert status["airflow_run"]["run_id"] == d["bad_token"].run_id
    assert "preconditions" in status["airflow_run"]["failed_tasks"]
    assert (d["flag"].status_code, d["flag"].json()["reason_code"]) == (403, "FLAG_DISABLED")
    assert (d["unknown"].status_code, d["unknown"].json()["reason_code"]) == (404, "CID_NOT_FOUND")
    assert (d["rollback"].status_code, d["rollback"].json()["reason_code"]) == (404, "NOTHING_TO_ROLL_BACK")


# --------------------------------------------------------------------------- a running job: trigger, cancel, retry

RUNNING = CIDS[6]


@pytest.fixture(scope="module")
def running_job_codes(seed_cid, crm, cdp, ops) -> Iterator[Scenario]:
    """A job whose first step ran (job recorded, CID locked), as a cancel meets it while the scheduler works:
    a second trigger is JOB_ALREADY_RUNNING; the cancel halts it (CANCELLED); a second cancel is
    JOB_ALREADY_FINISHED; a retry of the halted job is RETRY_REFUSED; a cancel of an unknown job is JOB_NOT_FOUND;
    an unknown rollout is ROLLOUT_NOT_FOUND; a sign-off of the halted job is SIGNOFF_REFUSED."""
    seeded = seed_cid(SeedSpec(cid=RUNNING, notes=20, **NO_FILES))
    conf = {"cid": RUNNING, "company_sso_id": seeded["company_sso_id"]}
    job = start.start_job(
        crm,
        cdp,
        RunConfig.from_params(conf, Thresholds()),
        run_id="reason-vocabulary-6506",
        triggered_by="ops",
        flag_cids=[RUNNING],
    )
    seen = Sightings()
    data: dict[str, Any] = {"job": job}
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AIRFLOW_VAR_CRM_NOTES_MIGRATION_ENABLED", json.dumps([RUNNING]))
            data["trigger"] = ops.post("/api/jobs", conf)
            seen.refusal("POST /api/jobs", data["trigger"])
        data["cancel"] = ops.post(f"/api/jobs/{job['job_id']}/cancel")
        assert data["cancel"].status_code == 202, data["cancel"].text
        data["status"] = ops.status(seen, RUNNING)
        data["cancel_again"] = ops.post(f"/api/jobs/{job['job_id']}/cancel")
        seen.refusal("POST /api/jobs/{id}/cancel", data["cancel_again"])
        data["retry"] = ops.post(f"/api/jobs/{job['job_id']}/retry")
        seen.refusal("POST /api/jobs/{id}/retry", data["retry"])
        data["unknown"] = ops.post("/api/jobs/reason-vocabulary-no-such-job/cancel")
        seen.refusal("POST /api/jobs/{id}/cancel", data["unknown"])
        data["no_rollout"] = ops.get("/api/rollouts/ro-reason-vocabulary")
        seen.refusal("GET /api/rollouts/{id}", data["no_rollout"])
        data["signoff"] = ops.post(f"/api/cids/{RUNNING}/signoff", {"seed": 1, "verdict": "looked at it"})
        seen.refusal("POST /api/cids/{cid}/signoff", data["signoff"])
        yield Scenario(seen, data)
    finally:
        from notes_migration.stores import job_store

        job_store.release_lock(cdp, RUNNING)


def test_trigger_cancel_and_retry_of_a_running_job(running_job_codes):
    d = running_job_codes.data
    assert (d["trigger"].status_code, d["trigger"].json()["reason_code"]) == (409, "JOB_ALREADY_RUNNING")
    assert d["cancel"].json()["halted_reason"] == "CANCELLED"
    assert (d["status"]["status"], d["status"]["halted_reason"]) == ("halted", "CANCELLED")
    assert (d["cancel_again"].status_code, d["cancel_again"].json()["reason_code"]) == (409, "JOB_ALREADY_FINISHED")
    retry = d["retry"].json()
    assert (d["retry"].status_code, retry["reason_code"]) == (422, "RETRY_REFUSED") and "CANCELLED" in retry["detail"]
    assert (d["unknown"].status_code, d["unknown"].json()["reason_code"]) == (404, "JOB_NOT_FOUND")
    assert (d["no_rollout"].status_code, d["no_rollout"].json()["reason_code"]) == (404, "ROLLOUT_NOT_FOUND")
    assert (d["signoff"].status_code, d["signoff"].json()["reason_code"]) == (422, "SIGNOFF_REFUSED")


# --------------------------------------------------------------------------- one writer: fenced, run gone

ONE_WRITER = CIDS[7]


@pytest.fixture(scope="module")
def one_writer_codes(seed_cid, crm, cdp, run, ops) -> Scenario:
    """A run whose lock is released after its first batch (as Ops' release-lock or a teardown would): its next
    batch is fenced, writes nothing, and the job ends halted LOCK_LOST. Then a job whose Airflow run does not exist
    (deleted): the status reports it halted RUN_NOT_FOUND."""
    seed_cid(SeedSpec(cid=ONE_WRITER, notes=60, **NO_FILES))
    real_page = batch.migrate_page
    calls: list[int] = []

    def lock_gone_after_the_first(crm_, db, job_id, page, *a, **kw):
        calls.append(page["page_no"])
        out = real_page(crm_, db, job_id, page, *a, **kw)
        if len(calls) == 1:
            job_store.release_lock(db, ONE_WRITER)
        return out

    seen = Sightings()
    data: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as mp, task_logs() as lines:
        mp.setattr(batch, "migrate_page", lock_gone_after_the_first)
        data["dag_run"] = run({"cid": ONE_WRITER, "batch_size": 10})
    seen.task_log("\n".join(lines), "a run that lost its lock")
    data["fenced"] = ops.status(seen, ONE_WRITER)
    gone = start.start_job(
        crm,
        cdp,
        RunConfig.from_params({"cid": ONE_WRITER, "company_sso_id": company_for(ONE_WRITER)}, Thresholds()),
        run_id="reason-vocabulary-deleted-run",
        triggered_by="ops",
        flag_cids=[ONE_WRITER],
    )
    try:
        data["gone"] = ops.status(seen, ONE_WRITER)
    finally:
        job_store.release_lock(cdp, ONE_WRITER)
    data["gone_job"] = gone
    return Scenario(seen, data)


def test_a_fenced_run_and_a_deleted_run(one_writer_codes, cdp):
    d = one_writer_codes.data
    fenced = d["fenced"]
    assert (fenced["status"], fenced["halted_reason"]) == ("halted", "LOCK_LOST")
    assert "failed" in task_states(d["dag_run"])["migrate_page"]
    written = cdp[C.CONTACT_NOTES].count_documents({"company_sso_id": company_for(ONE_WRITER)})
    assert written == fenced["counts"]["migrated"] + 3  # the first batch only (+ CDP's own notes)
    gone = d["gone"]
    assert (gone["status"], gone["halted_reason"], gone["job_id"]) == (
        "halted",
        "RUN_NOT_FOUND",
        d["gone_job"]["job_id"],
    )


# --------------------------------------------------------------------------- the vocabulary, complete


SCENARIOS = (
    "per_note_codes",
    "done_cid_codes",
    "coverage_halt",
    "insert_failure_halt",
    "crm_down",
    "refused_runs",
    "running_job_codes",
    "one_writer_codes",
)


def test_every_reason_code_is_provoked(request):
    """Each member of Reason was seen on an Ops surface by a scenario above, or is listed in UNPROVOKABLE."""
    seen: dict[Reason, set[str]] = {}
    for scenario in (request.getfixturevalue(name) for name in SCENARIOS):
        for code, where in scenario.sightings.seen.items():
            seen.setdefault(code, set()).update(where)
    missing = sorted(set(Reason) - set(seen) - set(UNPROVOKABLE))
    assert not missing, f"reason codes no scenario provoked (add one, or a reasoned UNPROVOKABLE entry): {missing}"
    assert not sorted(set(UNPROVOKABLE) & set(seen)), "provoked after all: take these off UNPROVOKABLE"
    print("\n".join(f"{code.value}: {sorted(where)}" for code, where in sorted(seen.items())))
