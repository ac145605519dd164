"""Test harness: the project environment, a private Airflow metadata DB per session, and
fixtures for the real local services (PostgreSQL, FerretDB, S3) started by scripts/services.sh.

Tests share the servers with anything else running on this machine: they write to their own CDP database
(`cdp_test`, devtools/cdp_db.py), and each test module uses its own CIDs (tests/cids.py) and reseeds them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_project_env() -> None:
    """The same environment scripts/env.sh gives every command (single source of truth)."""
    out = subprocess.run(
        ["bash", "-c", f"source {ROOT}/scripts/env.sh && env -0"], capture_output=True, check=True
    ).stdout
    for item in out.split(b"\0"):
        if b"=" in item:
            key, _, value = item.decode().partition("=")
            os.environ.setdefault(key, value)


_load_project_env()
# Tests write to a CDP database of their own (devtools/cdp_db.py), never to the dev stack's: its Ops view would
# list their jobs. Processes the tests start (scripts/airflow.sh for tests/stack, the CLI) inherit it.
from devtools.cdp_db import TEST_DATABASE, use_database  # noqa: E402

use_database(TEST_DATABASE)
# A private copy of the migrated metadata DB: parallel test sessions never share SQLite.
_template = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
_home = Path(tempfile.mkdtemp(prefix="crm-notes-airflow-"))
if _template.exists():
    shutil.copy(_template, _home / "airflow.db")
os.environ["AIRFLOW_HOME"] = str(_home)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home}/airflow.db"
os.environ.pop("AIRFLOW_VAR_CRM_NOTES_MIGRATION_ENABLED", None)
os.environ.pop("AIRFLOW_VAR_CRM_NOTES_MIGRATION_SETTINGS", None)
import json  # noqa: E402

import pytest  # noqa: E402

from tests.helpers import PARAM_DEFAULTS, assert_run_conserved  # noqa: E402

if not _template.exists():
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)


@pytest.fixture(scope="session")
def cdp():
    from notes_migration.stores.connections import cdp_database

    return cdp_database()


@pytest.fixture(scope="session")
def crm_rw():
    from notes_migration.stores.connections import crm_connection

    with crm_connection(read_only=False) as conn:
        yield conn


@pytest.fixture(scope="session")
def crm():
    from notes_migration.stores.connections import crm_connection

    with crm_connection() as conn:
        yield conn


@pytest.fixture(scope="session")
def seed_cid(crm_rw, cdp):
    """Seed (or reseed, wiping its CDP notes and bookkeeping) a CID from a SeedSpec."""
    from devtools.seed import seed

    def _seed(spec):
        return seed(spec, crm_rw, cdp)

    return _seed


@pytest.fixture(scope="session")
def migration_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("crm_notes_migration")
    # dag.test() of Airflow 3.3.2 cannot run a DAG with a Deadline Alert: on the run's end it looks the alert up
    # by the id only the DAG processor's serialisation assigns (a dict here: StatementError). The in-process tiers
    # run without it; the DAG tier checks it is declared and the stack tier runs the DAG with it.
    dag.deadline = None
    return dag


@pytest.fixture
def run_dag(migration_dag, monkeypatch, crm, cdp):
    """Run the DAG with dag.test(); returns the DagRun. `flag` is the list of enabled CIDs.

    The conf is completed with the params' defaults: dag.test() keeps the params of the
    previous run on the (session-wide) DAG object otherwise. After the run, the job it recorded is
    checked for conservation (tests/helpers.assert_conserved)."""

    def _run(conf: dict, *, flag: list[int] | None = None, settings: dict | None = None):
        conf = {**PARAM_DEFAULTS, **conf}
        enabled = flag if flag is not None else [conf["cid"]]
        monkeypatch.setenv("AIRFLOW_VAR_CRM_NOTES_MIGRATION_ENABLED", json.dumps(enabled))
        if settings is not None:
            monkeypatch.setenv("AIRFLOW_VAR_CRM_NOTES_MIGRATION_SETTINGS", json.dumps(settings))
        else:
            monkeypatch.delenv("AIRFLOW_VAR_CRM_NOTES_MIGRATION_SETTINGS", raising=False)
        dag_run = migration_dag.test(run_conf=conf)
        assert_run_conserved(crm, cdp, dag_run)  # every run: each source row in exactly one outcome
        return dag_run

    return _run


@pytest.fixture(scope="session")
def reference_api(cdp):
    """The reference CDP notes API (devtools/cdp_notes_api.py) in this process, over `cdp_test`, with a fault
    switch (tests/writers.py)."""
    from tests.writers import start_reference_api

    api = start_reference_api(cdp)
    yield api
    api.stop()


@pytest.fixture(params=["mongo", "http"])
def writer(request, monkeypatch):
    """The writer a scenario runs on, both in turn (tests/writers.py): pass `writer.settings` as the settings
    Variable; inject faults through `writer.faults`."""
    from notes_migration.stores import cdp_store
    from tests.writers import Faults, FlakyCollection, Writer

    if request.param == "http":
        api = request.getfixturevalue("reference_api")
        api.faults.reset()
        monkeypatch.setenv("AIRFLOW_CONN_CDP_NOTES_API", api.connection())
        yield Writer("http", api.faults, api)
        api.faults.reset()
        return
    faults = Faults()
    real_init = cdp_store.MongoNoteWriter.__init__

    def flaky_init(self, db):
        real_init(self, db)
        self.collection = FlakyCollection(self.collection, faults)

    monkeypatch.setattr(cdp_store.MongoNoteWriter, "__init__", flaky_init)
    yield Writer("mongo", faults)


@pytest.fixture(scope="session")
def stacks():
    """The real Airflow of the stack and browser tiers (devtools/stack.py): started on first use, one per session
    (both tiers reuse it), on private ports against the tests' CDP database, torn down at the end."""
    from devtools.cdp_db import TEST_DATABASE
    from devtools.stack import StackManager

    manager = StackManager(cdp_database=TEST_DATABASE)
    try:
        yield manager
    finally:
        manager.close()


@pytest.fixture(scope="session")
def fleet(seed_cid, migration_dag, crm, cdp):
    """Five CIDs, one per PRD §8 state, each put there by a real run of the DAG, with the alerts and metrics
    those runs emitted (tests/fleet.py). Built once per session, for whichever tier asks first."""
    from tests.fleet import build_fleet

    return build_fleet(seed_cid, migration_dag, crm, cdp)


@pytest.fixture
def pagerduty_edge(monkeypatch):
    """Intercept PagerDuty at the network edge: the hook, client, auth and JSON body are all real."""
    from tests.fleet import install_pagerduty_edge

    return install_pagerduty_edge(monkeypatch)


@pytest.fixture
def slack_webhook(monkeypatch):
    """A local Slack incoming-webhook server on 127.0.0.1; the `slack_alerts` connection points at it.
    Yields the list of requests it received."""
    from tests.fleet import start_slack_webhook

    server, url = start_slack_webhook()
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", json.dumps({"conn_type": "slackwebhook", "password": url}))
    yield server.received
    server.shutdown()
    server.server_close()


_TIER_OF_FOLDER = {
    "unit": "unit",
    "dags": "dags",
    "integration": "integration",
    "plugin": "plugin",
    "stack": "stack",
    "fault": "fault",
    "conformance": "conformance",
    "browser": "browser",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items):
    """Every test carries its tier marker, from the folder it lives in (tests/<tier>/...)."""
    for item in items:
        parts = item.path.relative_to(ROOT / "tests").parts
        tier = _TIER_OF_FOLDER.get(parts[0]) if len(parts) > 1 else None
        if tier and item.get_closest_marker(tier) is None:
            item.add_marker(getattr(pytest.mark, tier))
