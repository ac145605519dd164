"""The sign-off view: a sample of a finished CID's notes in two panes (CRM source text, CDP note for DOMPurify in a
sandboxed frame), covering every reason code the run recorded; the sign-off record (stored with the job, the status
JSON's `signoff`); its refusals; the page's CSP and escaping. The browser tier checks what a real browser does."""

from __future__ import annotations

import re

import pytest

from notes_migration.stores import job_store
from tests.plugin.plugin_support import IN_PROGRESS, PREFIX, SUCCESS, WITH_ERRORS


@pytest.fixture
def cookie(ops_token) -> dict[str, str]:
    return {"Cookie": f"_token={ops_token}"}


def test_the_sample_covers_every_reason_the_run_recorded(client, auth, fleet):
    for cid in (SUCCESS, WITH_ERRORS):
        view = client.get(f"{PREFIX}/api/signoff", params={"cid": cid, "seed": 42}, headers=auth).json()
        assert view["seed"] == 42 and view["notes"], view
        assert view["reasons"], "the fleet's runs record reason codes"
        assert [r["reason_code"] for r in view["reasons"] if not r["in_sample"]] == []
        if view["status"]["counts"].get("owners_unresolved"):  # the warning is listed (and so covered) too
            assert "OWNER_NOT_RESOLVED" in [r["reason_code"] for r in view["reasons"]]
        again = client.get(f"{PREFIX}/api/signoff", params={"cid": cid, "seed": 42}, headers=auth).json()
        assert [n["note_id"] for n in again["notes"]] == [n["note_id"] for n in view["notes"]]  # same seed, same sample
        originals = [n["original"] for n in view["notes"] if n["original"]]
        assert originals and all(o["zone"].startswith("UTC") for o in originals)  # the CRM time's zone, shown
        stored = [n.get("cdp") for n in view["notes"]]  # .get: the dev-database guard would read an index by that key
        owned = [c for c in stored if c and c["owner_id"]]
        assert owned and all(c["owner_name"] and "@" in c["owner_name"] for c in owned)  # named as the CDP names them


def test_the_page_shows_source_text_and_never_raw_note_html(client, cookie, fleet):
    resp = client.get(f"{PREFIX}/ui/signoff", params={"cid": WITH_ERRORS, "seed": 5}, headers=cookie)
    assert resp.status_code == 200, resp.text
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    html = resp.text
    frames = re.findall(r"<iframe[^>]*>", html)
    assert frames and all('sandbox="allow-same-origin"' in f and "allow-scripts" not in f for f in frames)
    assert '<script nonce="' in html and 'src="../static/purify.min.js"' in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline handlers
    # every note body is either escaped source text or JSON with <, > and & escaped
    for blob in re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', html, re.S):
        assert "<" not in blob and ">" not in blob
    assert "Record a sign-off" in html and 'id="seed">5<' in html


def test_a_sign_off_is_stored_with_the_job_and_shown_in_the_status(client, auth, cdp, fleet):
    job_id = client.get(f"{PREFIX}/api/status", params={"cid": SUCCESS}, headers=auth).json()["job_id"]
    resp = client.post(
        f"{PREFIX}/api/cids/{SUCCESS}/signoff",
        json={"seed": 9, "verdict": "  Mentions and timestamps checked: approved.  ", "job_id": job_id},
        headers=auth,
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["signoff"]["by"] == "ops"
    status = client.get(f"{PREFIX}/api/status", params={"cid": SUCCESS}, headers=auth).json()
    assert status["signoff"]["verdict"] == "Mentions and timestamps checked: approved."
    assert status["signoff"]["seed"] == 9 and status["signoff"]["job_id"] == job_id
    assert job_store.get_job(cdp, job_id)["signoffs"][-1]["seed"] == 9


@pytest.mark.parametrize(
    ("cid", "body"),
    [(SUCCESS, {"seed": 1, "verdict": "   "}), (SUCCESS, {"seed": 1, "verdict": "ok", "job_id": "an-older-job"})],
)
def test_refusals_write_nothing(client, auth, cdp, fleet, cid, body):
    before = job_store.latest_job(cdp, cid).get("signoffs")
    resp = client.post(f"{PREFIX}/api/cids/{cid}/signoff", json=body, headers=auth)
    assert (resp.status_code, resp.json()["reason_code"]) == (422, "SIGNOFF_REFUSED")
    assert job_store.latest_job(cdp, cid).get("signoffs") == before


def test_cookie_is_not_enough_to_sign_off(client, cookie, fleet):
    resp = client.post(f"{PREFIX}/api/cids/{SUCCESS}/signoff", json={"seed": 1, "verdict": "x"}, headers=cookie)
    assert resp.status_code == 401


def test_an_unfinished_cid_shows_why_it_cannot_be_signed(client, cookie, fleet):
    html = client.get(f"{PREFIX}/ui/signoff", params={"cid": IN_PROGRESS}, headers=cookie).text
    assert "A sign-off needs a finished migration" in html


def test_the_detail_links_the_sign_off_view_and_explains_codes(client, cookie, fleet):
    html = client.get(f"{PREFIX}/ui", params={"cid": WITH_ERRORS}, headers=cookie).text
    assert f'href="ui/signoff?cid={WITH_ERRORS}"' in html
    assert "The run finished, but some notes failed" in html  # the state in plain words


def test_dompurify_is_served_as_pinned(client):
    resp = client.get(f"{PREFIX}/static/purify.min.js")
    assert resp.status_code == 200 and resp.text.startswith("/*! @license DOMPurify 3.5.0")
