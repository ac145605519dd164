"""Harness of the Ops surface tests: a real Airflow API server app (built once per session, with the
SimpleAuthManager and real JWTs from /auth/token). The CIDs put in each PRD §8 state by real DAG runs are the
`fleet` fixture of tests/conftest.py (tests/fleet.py); the CIDs of each module: tests/cids.py.
"""

from __future__ import annotations

import pytest

from tests.helpers import bearer_token, ops_api_app
from tests.plugin.plugin_support import JWT_SECRET, USERS


@pytest.fixture(scope="session")
def api_app(tmp_path_factory):
    """The Airflow API server app (core API, auth manager, plugins) as `airflow api-server` builds it."""
    with ops_api_app(USERS, JWT_SECRET, tmp_path_factory.mktemp("auth") / "passwords.json") as app:
        yield app


@pytest.fixture(scope="session")
def client(api_app):
    from fastapi.testclient import TestClient

    with TestClient(api_app, base_url="http://127.0.0.1") as c:
        yield c


def _token(client, user: str) -> str:
    return bearer_token(client, user, USERS[user][0])


@pytest.fixture(scope="session")
def ops_token(client) -> str:
    return _token(client, "ops")


@pytest.fixture(scope="session")
def viewer_token(client) -> str:
    return _token(client, "viewer")


@pytest.fixture(scope="session")
def auth(ops_token) -> dict[str, str]:
    return {"Authorization": f"Bearer {ops_token}"}


@pytest.fixture(scope="session")
def dag_in_db(migration_dag) -> None:
    """The DAG serialized into this session's metadata DB, as the DAG processor would (needed to trigger)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.dag import DagModel

    if DagModel.get_current("crm_notes_migration") is not None:
        return
    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        sync_bag_to_db(bag, bundle.name, bundle.version)
    assert DagModel.get_current("crm_notes_migration") is not None
