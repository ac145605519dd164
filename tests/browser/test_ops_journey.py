"""The Ops journey a new user follows, in a real browser against a real Airflow: log in with the printed
credentials, trigger `crm_notes_migration` from Airflow's trigger form, open the Ops view from the nav, watch the
CID reach completed_success (the state counters agree with the fleet), open its detail, download the error CSV,
open the sign-off view (every reason code of the run in the sample) and record a sign-off. Screenshots of each
step: .build/browser/test_the_ops_journey/. A refusal: a CID whose flag is off, triggered from the same form, shows
FLAG_DISABLED and its plain words on its page of the Ops view.

CIDs: the demo CID 5000 (reseeded here); 9500 (flag off)."""

from __future__ import annotations

import re
import time

import pytest

from devtools.stack import Stack
from tests.browser.conftest import VIEWPORT, login
from tests.cids import cids

DEMO = 5000
[FLAG_OFF] = cids(__name__)
RUN_TIMEOUT_S = 240


@pytest.fixture
def demo_5000(seed_cid):
    from devtools.seed import DEMO_SPECS

    [spec] = [s for s in DEMO_SPECS if s.cid == DEMO]
    return seed_cid(spec)


def _ops_frame(page):
    """The Ops view's frame, once its page has loaded (its CID lookup drawn: on an empty fleet there is no table)."""
    frame = page.frame_locator("iframe[src*='crm-notes-migration']").first
    frame.locator("form.lookup").wait_for(timeout=30_000)
    return frame


def trigger_from_form(page, stack: Stack, cid: int, company: str, shots) -> dict:
    """Airflow's own trigger form, with the DAG's params: the run it created."""
    page.goto(f"{stack.base_url}/dags/crm_notes_migration")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.locator("input[name=element_cid]").fill(str(cid))
    dialog.locator("[name=element_company_sso_id]").fill(company)
    shots(page, "trigger-form")
    before = {r["dag_run_id"] for r in stack.dag_runs()}
    dialog.get_by_role("button", name="Trigger").last.click()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the form posts, then Airflow lists the run
        runs = [
            r for r in stack.dag_runs() if (r.get("conf") or {}).get("cid") == cid and r["dag_run_id"] not in before
        ]
        if runs:
            return runs[0]
        page.wait_for_timeout(1000)
    shots(page, "no-run")
    raise AssertionError(f"the trigger form created no run of CID {cid} in 30 s")


def test_a_refusal_shows_its_reason_in_the_page(chromium, stack: Stack, seed_cid, shots):
    from devtools.seed import SeedSpec

    seeded = seed_cid(SeedSpec(cid=FLAG_OFF, notes=5))
    stack.set_flag([])  # off for every CID
    context = chromium.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        login(page, stack)
        run = trigger_from_form(page, stack, FLAG_OFF, seeded["company_sso_id"], shots)
        deadline = time.monotonic() + 240
        while (state := stack.dag_run(run["dag_run_id"])["state"]) != "failed":
            assert time.monotonic() < deadline, f"the flag-off run is still {state} after 240 s"
            page.wait_for_timeout(2000)
        page.get_by_role("link", name="CRM Notes Migration").first.click()
        frame = _ops_frame(page)
        frame.locator("form.lookup input[name=cid]").fill(str(FLAG_OFF))
        frame.get_by_role("button", name="Show").click()
        refused = frame.locator(".figure.refused")
        refused.wait_for(timeout=30_000)
        shots(page, "refusal-in-the-page")
        text = refused.inner_text()
        assert "FLAG_DISABLED" in text and "switched off" in text, text
    finally:
        context.close()


def test_the_ops_journey(chromium, stack: Stack, demo_5000, shots):
    stack.set_flag([DEMO])
    context = chromium.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    try:
        login(page, stack)
        shots(page, "logged-in")

        started = time.monotonic()
        trigger_from_form(page, stack, DEMO, demo_5000["company_sso_id"], shots)

        # the Ops view from the nav, until the CID is completed_success
        page.get_by_role("link", name="CRM Notes Migration").first.click()
        frame = _ops_frame(page)
        row = frame.locator("table.fleet tr", has=frame.locator(f"a[href='ui?cid={DEMO}']"))
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            if row.count() and row.locator(".badge").first.inner_text() == "completed_success":
                break
            page.wait_for_timeout(8000)  # the frame's own refresh is 15 s; reloading sooner can outrun its load
            page.reload()
            frame = _ops_frame(page)
            row = frame.locator("table.fleet tr", has=frame.locator(f"a[href='ui?cid={DEMO}']"))
        else:
            shots(page, "timed-out")
            raise AssertionError(f"CID {DEMO} did not reach completed_success in the Ops view: {stack.status(DEMO)}")
        print(f"\n[browser] CID {DEMO} completed_success {time.monotonic() - started:.0f} s after the trigger")
        shots(page, "ops-view-completed")
        # the state counters agree with the fleet table
        badges = frame.locator("table.fleet td .badge").all_inner_texts()
        chip = frame.locator(".summary .chip", has=frame.locator(".badge.s-completed_success"))
        assert int(chip.locator("b").inner_text()) == badges.count("completed_success") >= 1

        # its detail, the error CSV
        frame.locator(f"table.fleet a[href='ui?cid={DEMO}']").click()
        frame.locator("section.detail").wait_for()
        shots(page, "cid-detail")
        with page.expect_download() as download:
            frame.get_by_role("link", name="error log (CSV)").click()
        csv_text = open(download.value.path(), encoding="utf-8").read()
        assert csv_text.splitlines()[0].startswith("legacy_crm_note_id,reason_code,details,outcome")

        # the sign-off view: every reason code of the run is in the sample; record a sign-off
        frame.get_by_role("link", name="Sign-off view").click()
        frame.locator("table.reasons").wait_for()
        frame.locator("iframe.rendered").first.wait_for()
        shots(page, "signoff-view")
        not_in_sample = frame.locator("table.reasons td .unavailable").count()
        assert not_in_sample == 0, "a reason code of the run is missing from the sample"
        seed = int(frame.locator("#seed").inner_text())
        frame.locator("textarea[name=verdict]").fill("Browser journey: panes, timestamps and attachments checked.")
        token = frame.locator("input[name=token]")
        if not token.input_value():
            token.fill(stack.tokens["ops"])
        frame.get_by_role("button", name=re.compile("Sign off CID")).click()
        result = frame.locator("output.signoff-result")
        result.filter(has_text="signed off by ops").wait_for(timeout=15_000)
        shots(page, "signed-off")
        signoff = stack.status(DEMO)["signoff"]
        assert (signoff["by"], signoff["seed"]) == ("ops", seed)

        # the detail and sign-off pages on their own, whole, at 1280 px: no horizontal scrolling
        alone = context.new_page()
        for name, path in (("detail-page", f"ui?cid={DEMO}"), ("signoff-page", f"ui/signoff?cid={DEMO}&seed={seed}")):
            alone.goto(f"{stack.base_url}/crm-notes-migration/{path}")
            alone.locator("h1, h2").first.wait_for()
            shots(alone, name)
            widths = alone.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            assert widths[0] <= widths[1], f"{name} scrolls sideways at 1280 px: {widths}"
    finally:
        context.close()
