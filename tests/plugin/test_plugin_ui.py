"""The nav view: authenticated by the UI cookie, self-refreshing, frameable by Airflow only, escaping everything."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.cids import cids
from tests.plugin.plugin_support import HALTED, IN_PROGRESS, NOT_STARTED, PREFIX, SUCCESS, UNKNOWN_CID, WITH_ERRORS

[HOSTILE_CID] = cids(__name__)
HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


@pytest.fixture
def cookie(ops_token) -> dict[str, str]:
    return {"Cookie": f"_token={ops_token}"}


def test_the_fleet_page_in_the_airflow_iframe(client, cookie, fleet):
    resp = client.get(f"{PREFIX}/ui", headers=cookie)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    html = resp.text
    assert '<meta http-equiv="refresh" content="15">' in html
    for cid in (IN_PROGRESS, HALTED, SUCCESS, WITH_ERRORS):
        assert f'href="ui?cid={cid}"' in html
    assert f'href="ui?cid={NOT_STARTED}"' not in html  # no job, not in the fleet
    run = fleet.runs[SUCCESS].run_id
    assert f'href="../dags/crm_notes_migration/runs/{run.replace(":", "%3A").replace("+", "%2B")}"' in html
    for state in ("in_progress", "halted", "completed_success", "completed_with_errors"):
        assert f'class="badge s-{state}"' in html
    # only relative links: the page works under Airflow's base URL
    assert 'href="/' not in html and 'action="/' not in html and 'src="/' not in html


def test_the_detail_of_a_halted_cid(client, cookie, fleet):
    html = client.get(f"{PREFIX}/ui", params={"cid": HALTED}, headers=cookie).text
    assert "FAILURE_RATE_EXCEEDED" in html and "CONTACT_NOT_MAPPED" in html
    status = client.get(f"{PREFIX}/api/status", params={"cid": HALTED}, headers=cookie).json()
    assert f'href="api/jobs/{status["job_id"]}/errors"' in html
    assert "Effective configuration" in html and "&#34;max_failure_rate&#34;: 0.01" in html
    assert "halted" in html and "started" in html  # the event timeline


def test_lookups_of_a_cid_without_job_or_unknown_or_malformed(client, cookie):
    assert "No migration job yet" in client.get(f"{PREFIX}/ui", params={"cid": NOT_STARTED}, headers=cookie).text
    assert (
        "is not an organization of the CRM"
        in client.get(f"{PREFIX}/ui", params={"cid": UNKNOWN_CID}, headers=cookie).text
    )
    assert "positive whole number" in client.get(f"{PREFIX}/ui", params={"cid": "<b>x"}, headers=cookie).text


def test_anonymous_visitors_get_a_401_page_pointing_to_the_login(client):
    resp = client.get(f"{PREFIX}/ui")
    assert resp.status_code == 401
    assert "Sign in to Airflow" in resp.text and "/auth/login" in resp.text


def test_customer_and_user_text_is_escaped(client, cookie, seed_cid, cdp):
    """A run id chosen by whoever triggered through Airflow, event details and names are all untrusted."""
    from devtools.seed import SeedSpec
    from notes_migration.domain.config import RunConfig
    from notes_migration.stores import job_store

    seeded = seed_cid(SeedSpec(cid=HOSTILE_CID, notes=5))
    stamp = dt.datetime.now(dt.UTC)
    job_id = "hostile-job"
    job_store.create_job(
        cdp,
        {
            "_id": job_id,
            "cid": HOSTILE_CID,
            "company_sso_id": seeded["company_sso_id"],
            "dag_id": "crm_notes_migration",
            "run_id": f"manual__{HOSTILE}",
            "triggered_by": HOSTILE,
            "state": "halted",
            "created_at": stamp,
            "updated_at": stamp,
            "config": RunConfig(cid=HOSTILE_CID, company_sso_id=seeded["company_sso_id"]).as_dict(),
            "halted": {"reason": "COVERAGE_BELOW_GATE", "failure_rate": 0.0, "at": stamp},
        },
    )
    job_store.record_events(
        cdp,
        [
            {
                "_id": f"{job_id}:h",
                "event": "crm_notes_migration_halted",
                "job_id": job_id,
                "cid": HOSTILE_CID,
                "at": stamp,
                "properties": {"reason": HOSTILE},
            }
        ],
    )
    try:
        for params in ({}, {"cid": HOSTILE_CID}):
            html = client.get(f"{PREFIX}/ui", params=params, headers=cookie).text
            assert "<script>alert(1)" not in html and "<img src=x" not in html
            assert "onerror=alert" not in html or "&lt;img src=x onerror=alert(2)&gt;" in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, as text
    finally:
        seed_cid(SeedSpec(cid=HOSTILE_CID, notes=5))  # reseeding wipes the CID's jobs and events


def test_csv_cells_that_look_like_formulas_are_neutralised():
    from notes_migration.ops.queries import error_log_csv

    text = error_log_csv(
        [
            {"legacy_crm_note_id": 1, "reason_code": "X", "details": '=HYPERLINK("http://evil")'},
            {"legacy_crm_note_id": 2, "reason_code": "X", "details": 'plain, with "quotes"'},
        ]
    )
    lines = text.splitlines()
    assert lines[0].startswith("legacy_crm_note_id,reason_code,details,outcome,created_at,reason")
    assert lines[1].startswith("1,X,\"'=HYPERLINK(")
    assert lines[2].startswith('2,X,"plain, with ""quotes""",,')


def test_the_root_redirects_to_the_page(client, cookie):
    resp = client.get(f"{PREFIX}/", headers=cookie, follow_redirects=False)
    assert resp.status_code == 307 and resp.headers["location"] == f"{PREFIX}/ui"
