"""The project's XSS fixtures rendered in the sign-off view execute nothing and send no request off the page: as
CRM originals (source text) and, worse than any real run, as stored CDP notes holding the raw payloads (the page's
own defences: DOMPurify, then a frame sandboxed without scripts, under a CSP)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

from devtools.seed import SeedSpec
from devtools.stack import Stack
from notes_migration.domain import config as C
from tests.browser.conftest import VIEWPORT, login
from tests.cids import cids

[CID] = cids(__name__)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _payloads() -> list[str]:
    vectors = [
        v for v in (FIXTURES / "xss_vectors.txt").read_text().splitlines() if v.strip() and not v.startswith("#")
    ]
    return vectors + json.loads((FIXTURES / "xss_dompurify_fixtures.json").read_text())["payloads"]


def test_xss_fixtures_execute_nothing_in_the_signoff_view(chromium, stack: Stack, seed_cid, crm_rw, cdp, run_dag):
    payloads = _payloads()
    seeded = seed_cid(SeedSpec(cid=CID, notes=len(payloads) + 20, activity_share=0.0, no_person_share=0.0))
    with crm_rw.cursor() as cur:
        cur.execute(
            "SELECT id FROM crm_notes WHERE organization_id = %s AND crm_person_id IS NOT NULL ORDER BY id", (CID,)
        )
        ids = [r[0] for r in cur.fetchall()][: len(payloads)]
        for note_id, payload in zip(ids, payloads, strict=False):
            cur.execute("UPDATE crm_notes SET note = %s WHERE id = %s", (payload, note_id))
    crm_rw.commit()
    run_dag({"cid": CID, "company_sso_id": seeded["company_sso_id"]})
    # the stored notes as a broken store could hold them: the raw payloads
    for note_id, payload in zip(ids, payloads, strict=False):
        cdp[C.CONTACT_NOTES].update_one(
            {"company_sso_id": seeded["company_sso_id"], "legacy_crm_note_id": note_id}, {"$set": {"note": payload}}
        )

    context = chromium.new_context(viewport=VIEWPORT)
    page = context.new_page()
    origin = urlparse(stack.base_url).netloc
    dialogs: list[str] = []
    offsite: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    blocked: list[str] = []

    def leaves(request) -> None:
        url = urlparse(request.url)
        if url.scheme not in ("data", "about", "blob") and url.netloc != origin:
            offsite.append(request.url)

    def refused(request) -> None:
        # Chromium reports a request its CSP refused as one that failed with "csp": it never left the page
        if request.url in offsite and "csp" in (request.failure or "").lower():
            offsite.remove(request.url)
            blocked.append(request.url)

    page.on("request", leaves)
    page.on("requestfailed", refused)
    try:
        login(page, stack)
        # hundreds of frames: wait for the document, not for every frame's load event
        page.goto(
            f"{stack.base_url}/crm-notes-migration/ui/signoff?cid={CID}&seed=1&random_draw=500",
            wait_until="domcontentloaded",
            timeout=180_000,
        )
        page.locator("iframe.rendered").first.wait_for()
        page.wait_for_timeout(3000)
        shown = page.locator("article.note").count()
        assert shown >= len(ids), f"only {shown} of {len(ids)} fixture notes in the page"
        page.screenshot(path=str(Path(__file__).resolve().parents[2] / ".build" / "browser" / "xss-signoff.png"))
        assert dialogs == [], f"a payload ran: {dialogs[:5]}"
        assert offsite == [], f"requests left the page: {offsite[:5]}"
        print(f"\n[browser] {len(ids)} fixture notes shown; off-site requests refused by the CSP: {len(blocked)}")
        assert page.evaluate("typeof window.DOMPurify.sanitize") == "function"  # the sanitiser did load
    finally:
        context.close()
