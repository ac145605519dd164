"""Harness of the browser tier: Playwright for Python driving Debian's Chromium (installed by scripts/browser.sh
when missing; Playwright never downloads a browser), against the stack tier's real Airflow (the session's
`stacks`, tests/conftest.py). Screenshots of each step go to .build/browser/ (kept as test artefacts).

CIDs of this tier: tests/cids.py (and the demo CID 5000, reseeded here).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.stack import Stack, StackManager

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / ".build" / "browser"
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright (scripts/browser.sh installs it once when it is missing)."""
    run = subprocess.run([str(ROOT / "scripts" / "browser.sh")], capture_output=True, text=True, check=False)
    assert run.returncode == 0, f"scripts/browser.sh failed:\n{run.stderr[-2000:]}"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def stack(stacks: StackManager) -> Iterator[Stack]:
    """The LocalExecutor stack of the session (started on first use); the flag Variable is put back afterwards."""
    import json

    current = stacks.get("local")
    before = json.loads(current.flag())
    yield current
    current.set_flag(before)


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Any:
    """shot(page, name): a full-page screenshot as .build/browser/<test>/<nn>-<name>.png."""
    folder = SHOTS / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1, 100))

    def shot(page: Any, name: str) -> Path:
        path = folder / f"{next(counter):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shot


def login(page: Any, stack: Stack, user: str = "ops") -> None:
    """Log in through Airflow's own login form with the printed credentials (the passwords file)."""
    import json

    password = json.loads(Path(stack.env["PASSWORDS_FILE"]).read_text())[user]
    page.goto(f"{stack.base_url}/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)
