"""Tests and benchmarks never write into the CDP database of the dev stack (`scripts/airflow.sh up` shows
its jobs in the Ops view): the test session, and the Airflow stack the stack tier starts, use `cdp_test`;
the benchmarks use `cdp_bench` (devtools/cdp_db.py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from devtools.cdp_db import BENCH_DATABASE, CONN_VAR, TEST_DATABASE, database_of, dev_database, use_database

ROOT = Path(__file__).resolve().parents[2]


def test_the_session_cdp_database_is_not_the_dev_stacks():
    from notes_migration.stores.connections import cdp_database

    assert dev_database() == "cdp"  # airflow_settings.yaml's cdp_mongo schema
    assert cdp_database().name == TEST_DATABASE != dev_database()
    assert database_of(os.environ[CONN_VAR]) == TEST_DATABASE  # what processes the tests start inherit
    assert BENCH_DATABASE not in (TEST_DATABASE, dev_database())


def test_the_stack_tier_starts_its_airflow_on_the_test_database():
    from devtools.stack import StackManager

    env = StackManager(cdp_database=TEST_DATABASE).env  # nothing started: ports picked, paths named
    assert database_of(env[CONN_VAR]) == TEST_DATABASE
    assert json.loads(env[CONN_VAR])["host"] == json.loads(os.environ[CONN_VAR])["host"]
    with pytest.raises(ValueError, match="dev stack"):
        StackManager(cdp_database=dev_database())


def test_use_database_keeps_the_server_and_refuses_the_dev_database():
    env = {CONN_VAR: "mongodb://user:pw@mongo.internal:27017/cdp?authSource=admin"}
    assert use_database("cdp_x", env) == "mongodb://user:pw@mongo.internal:27017/cdp_x?authSource=admin"
    assert database_of(env[CONN_VAR]) == "cdp_x"
    with pytest.raises(ValueError):
        use_database(dev_database(), env)


def test_no_test_or_benchmark_names_the_dev_database():
    named = re.compile(r"""get_database\(\s*["']cdp["']|\[\s*["']cdp["']\s*\]|["']schema["']\s*:\s*["']cdp["']""")
    hits = [
        f"{p.relative_to(ROOT)}:{n}"
        for folder in ("tests", "benchmarks", "devtools")
        for p in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if named.search(line)
    ]
    assert not hits, hits
