"""Harness of the stack tier: a real Airflow started by `scripts/airflow.sh up` (devtools/stack.py), once per
test session, on ports of its own, its own state directory, a fresh metadata database and the tests' CDP
database (`cdp_test`, devtools/cdp_db.py), torn down at the end.

CIDs of this tier: tests/cids.py (and the demo CID 100, reseeded here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devtools.stack import Stack, StackManager

# `stacks` (one per session, shared with the browser tier) is in tests/conftest.py.


def _flag_kept(stack: Stack) -> Iterator[Stack]:
    """The stack for one test; the flag Variable it finds is put back afterwards (tests change it)."""
    before = json.loads(stack.flag())
    yield stack
    stack.set_flag(before)


@pytest.fixture
def local_stack(stacks: StackManager) -> Iterator[Stack]:
    """The LocalExecutor stack (started on first use, kept for the session)."""
    yield from _flag_kept(stacks.get("local"))


@pytest.fixture
def celery_stack(stacks: StackManager) -> Iterator[Stack]:
    """The CeleryExecutor stack: Redis and workers worker-1, worker-2 (replaces the LocalExecutor one)."""
    yield from _flag_kept(stacks.get("celery"))
