"""The Monitor API (PRD §8) for CIDs put in each state by real DAG runs, the error log and coverage endpoints."""

from __future__ import annotations

import csv
import io

from notes_migration.domain.codes import Reason, State
from tests.plugin.plugin_support import HALTED, IN_PROGRESS, NOT_STARTED, SUCCESS, UNKNOWN_CID, WITH_ERRORS

PREFIX = "/crm-notes-migration"


def status(client, auth, cid: int):
    return client.get(f"{PREFIX}/api/status", params={"cid": cid}, headers=auth)


def test_each_state_in_the_prd_field_names(client, auth, fleet):
    got = {cid: status(client, auth, cid).json() for cid in (NOT_STARTED, IN_PROGRESS, HALTED, SUCCESS, WITH_ERRORS)}
    assert {cid: s["status"] for cid, s in got.items()} == {
        NOT_STARTED: State.NOT_STARTED,
        IN_PROGRESS: State.IN_PROGRESS,
        HALTED: State.HALTED,
        SUCCESS: State.COMPLETED_SUCCESS,
        WITH_ERRORS: State.COMPLETED_WITH_ERRORS,
    }
    assert got[NOT_STARTED] == {"cid": NOT_STARTED, "status": "not_started"}

    running = got[IN_PROGRESS]
    assert {"progress_pct", "notes_processed", "notes_total", "job_id"} <= set(running)
    assert running["notes_total"] > 0 and running["notes_processed"] == running["notes_total"]
    assert running["progress_pct"] == 100.0
    assert running["throughput_notes_per_s"] > 0 and "eta_seconds" in running
    assert running["counts"]["migrated"] == running["notes_processed"]

    halted = got[HALTED]
    assert halted["failure_rate"] > 0.01
    assert halted["halted_reason"] == Reason.FAILURE_RATE_EXCEEDED
    assert halted["error_log_url"] == f"{PREFIX}/api/jobs/{halted['job_id']}/errors"
    assert halted["counts"]["failed"][Reason.CONTACT_NOT_MAPPED] >= 1

    done = got[SUCCESS]
    assert done["notes_migrated"] > 0 and done["validation"]["match_pct"] == 100.0
    assert done["counts"]["failed"] == {}
    assert "ACTIVITY_OUT_OF_SCOPE" in done["counts"]["out_of_scope"]

    partial = got[WITH_ERRORS]
    assert partial["validation"]["match_pct"] < 99.0
    assert 0 < partial["failure_rate"] <= 0.5
    assert partial["notes_migrated"] == partial["validation"]["found"]
    assert partial["error_log_url"].endswith(f"/api/jobs/{partial['job_id']}/errors")

    for s in got.values():
        if s["status"] != "not_started":
            assert s["run_id"] == fleet.runs[s["cid"]].run_id


def test_a_cid_unknown_to_the_crm_is_404_not_not_started(client, auth):
    resp = status(client, auth, UNKNOWN_CID)
    assert resp.status_code == 404
    assert resp.json()["reason_code"] == Reason.CID_NOT_FOUND


def test_a_malformed_cid_is_422(client, auth):
    for bad in ("abc", "0", "-3"):
        assert client.get(f"{PREFIX}/api/status", params={"cid": bad}, headers=auth).status_code == 422


def test_the_error_log_url_of_a_halted_run_serves_its_csv(client, auth, fleet):
    halted = status(client, auth, HALTED).json()
    resp = client.get(halted["error_log_url"], headers=auth)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    assert "attachment;" in resp.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert rows, "a halted run has its failures in the error log"
    assert {"legacy_crm_note_id", "reason_code", "details", "outcome", "created_at", "reason"} <= set(rows[0])
    assert {r["reason_code"] for r in rows} == {Reason.CONTACT_NOT_MAPPED}
    assert all(r["outcome"] == "failed" and r["details"] and int(r["legacy_crm_note_id"]) > 0 for r in rows)
    assert len(rows) == sum(halted["counts"]["failed"].values())

    as_json = client.get(halted["error_log_url"], params={"format": "json"}, headers=auth).json()
    assert as_json["count"] == len(rows)
    assert [e["legacy_crm_note_id"] for e in as_json["entries"]] == [int(r["legacy_crm_note_id"]) for r in rows]
    by_accept = client.get(halted["error_log_url"], headers={**auth, "Accept": "application/json"})
    assert by_accept.json()["count"] == len(rows)

    everything = client.get(halted["error_log_url"], params={"outcome": "all", "format": "json"}, headers=auth).json()
    assert everything["count"] > len(rows)  # the skips (activities, persons without notes) as well


def test_errors_of_an_unknown_job_is_404(client, auth):
    resp = client.get(f"{PREFIX}/api/jobs/no-such-job/errors", headers=auth)
    assert resp.status_code == 404


def test_coverage_report_before_any_run(client, auth, fleet):
    company = fleet.seeded[HALTED]["company_sso_id"]
    resp = client.get(f"{PREFIX}/api/coverage", params={"cid": HALTED, "company_sso_id": company}, headers=auth)
    assert resp.status_code == 200
    report = resp.json()
    assert report["persons_unmapped"] == fleet.seeded[HALTED]["unmapped_persons"] or report["persons_unmapped"] > 0
    assert report["coverage_pct"] < 99 and report["passes_gate"] is False and report["gate_pct"] == 99.0
    ok = client.get(
        f"{PREFIX}/api/coverage",
        params={"cid": SUCCESS, "company_sso_id": fleet.seeded[SUCCESS]["company_sso_id"]},
        headers=auth,
    ).json()
    assert ok["coverage_pct"] == 100.0 and ok["passes_gate"] is True


def test_coverage_validates_its_parameters(client, auth):
    bad_uuid = client.get(f"{PREFIX}/api/coverage", params={"cid": SUCCESS, "company_sso_id": "nope"}, headers=auth)
    assert bad_uuid.status_code == 422
    unknown = client.get(
        f"{PREFIX}/api/coverage",
        headers=auth,
        params={"cid": UNKNOWN_CID, "company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e"},
    )
    assert unknown.status_code == 404


def test_the_fleet_lists_every_cid_with_a_job(client, auth, fleet):
    body = client.get(f"{PREFIX}/api/jobs", headers=auth).json()
    rows = {r["cid"]: r for r in body["jobs"]}
    assert {IN_PROGRESS, HALTED, SUCCESS, WITH_ERRORS} <= set(rows) and NOT_STARTED not in rows
    assert rows[SUCCESS]["match_pct"] == 100.0 and rows[SUCCESS]["progress_pct"] == 100.0
    assert rows[SUCCESS]["notes_migrated"] == rows[SUCCESS]["notes_total"]
    assert rows[HALTED]["status"] == "halted" and rows[HALTED]["failure_rate"] > 0.01
    assert rows[IN_PROGRESS]["run_id"] == fleet.runs[IN_PROGRESS].run_id
    assert body["counts"]["halted"] >= 1
