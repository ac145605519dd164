"""Where the conformance suite points: CDP_NOTES_API_URL with CDP_NOTES_API_TOKEN (an S2S token) and, for the 403
check, CDP_NOTES_API_USER_TOKEN (an authenticated user's token). Unset, the suite starts the reference
implementation (devtools/cdp_notes_api.py) in this process over the tests' CDP database."""

from __future__ import annotations

import os
from dataclasses import dataclass

import httpx
import pytest


@dataclass
class Target:
    url: str
    token: str
    user_token: str | None

    def client(self, token: str | None = "s2s") -> httpx.Client:
        headers = {}
        bearer = self.token if token == "s2s" else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="session")
def target(request) -> Target:
    url = os.environ.get("CDP_NOTES_API_URL")
    if url:
        token = os.environ.get("CDP_NOTES_API_TOKEN")
        if not token:
            pytest.fail("CDP_NOTES_API_URL is set: CDP_NOTES_API_TOKEN (an S2S token) must be set too")
        return Target(url.rstrip("/"), token, os.environ.get("CDP_NOTES_API_USER_TOKEN"))
    from tests.writers import S2S_TOKEN, USER_TOKEN

    api = request.getfixturevalue("reference_api")
    return Target(api.url, S2S_TOKEN, USER_TOKEN)
