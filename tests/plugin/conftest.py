"""Harness of the Ops surface tests: a real Airflow API server app (built once per session, with the
SimpleAuthManager and real JWTs from /auth/token), and CIDs put in each PRD §8 state by real DAG runs.

CIDs: see plugin_support.py (3001–3099 on the shared servers).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2  # the HTTP client the pagerduty SDK is built on
import pytest
from plugin_support import (
    HALTED,
    IN_PROGRESS,
    JWT_SECRET,
    NOT_STARTED,
    PD_ROUTING_KEY,
    SUCCESS,
    USERS,
    WITH_ERRORS,
    StatsRecorder,
    set_run_state,
)
from tests.helpers import bearer_token, ops_api_app
from tests.helpers import run_migration as run_dag_test


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


# --------------------------------------------------------------------------- the SaaS edges


@dataclass
class PagerDutyEdge:
    """Stands in for events.pagerduty.com: the provider's client sends real HTTP requests to this transport."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    status_code: int = 202

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append({"url": str(request.url), "json": body})
        if self.status_code >= 400:
            return httpx2.Response(self.status_code, json={"status": "invalid event", "errors": ["test"]})
        return httpx2.Response(202, json={"status": "success", "dedup_key": body.get("dedup_key") or "generated"})

    def for_cid(self, cid: int) -> list[dict[str, Any]]:
        return [r["json"] for r in self.requests if r["json"]["payload"]["custom_details"]["cid"] == cid]


def install_pagerduty_edge(mp: pytest.MonkeyPatch) -> PagerDutyEdge:
    """Route the real PagerDuty client's HTTP through a mock transport that records the events."""
    import pagerduty

    edge = PagerDutyEdge()
    original = pagerduty.EventsApiV2Client.__init__

    def init(self, routing_key, *args, **kwargs):
        kwargs["transport"] = httpx2.MockTransport(edge.handler)
        original(self, routing_key, *args, **kwargs)

    mp.setattr(pagerduty.EventsApiV2Client, "__init__", init)
    mp.setenv(
        "AIRFLOW_CONN_PAGERDUTY_EVENTS", json.dumps({"conn_type": "pagerduty_events", "password": PD_ROUTING_KEY})
    )
    return edge


@pytest.fixture
def pagerduty_edge(monkeypatch) -> PagerDutyEdge:
    """Intercept PagerDuty at the network edge: the hook, client, auth and JSON body are all real."""
    edge = install_pagerduty_edge(monkeypatch)
    return edge


class _SlackHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        length = int(self.headers.get("Content-Length", 0))
        self.server.received.append({"path": self.path, "json": json.loads(self.rfile.read(length))})  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slack_webhook(monkeypatch) -> Iterator[list[dict[str, Any]]]:
    """A local Slack incoming-webhook server on 127.0.0.1; the `slack_alerts` connection points at it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlackHandler)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/local"
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", json.dumps({"conn_type": "slackwebhook", "password": url}))
    yield server.received  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- CIDs in each state, by real runs


def run_migration(
    migration_dag,
    monkeypatch,
    conf: dict,
    *,
    crm,
    cdp,
    settings: dict | None = None,
    flag: list[int] | None = None,
    **test_kwargs: Any,
):
    """dag.test() of one CID, then conservation of the job it recorded (tests/helpers.run_migration)."""
    return run_dag_test(migration_dag, monkeypatch, conf, crm=crm, cdp=cdp, flag=flag, settings=settings, **test_kwargs)


@dataclass
class Fleet:
    runs: dict[int, Any]
    seeded: dict[int, dict]
    pagerduty: PagerDutyEdge
    stats: StatsRecorder


@pytest.fixture(scope="session")
def fleet(seed_cid, migration_dag, crm, cdp) -> Iterator[Fleet]:
    """Five CIDs, one per PRD §8 state, each put there by a real run of the DAG (dag.test()).

    The runs alert through the real providers' hooks: PagerDuty is intercepted at
    its HTTP edge (the halted run's P1 is delivered; the completed_with_errors
    run's P2 gets an HTTP 400, so it is undeliverable), and Airflow Stats go to a
    recorder. Each run is checked for conservation (tests/helpers.assert_conserved)."""
    from tests.support.seed import SeedSpec

    from notes_migration.stores import metrics

    mp = pytest.MonkeyPatch()
    edge = install_pagerduty_edge(mp)
    stats = StatsRecorder()
    mp.setattr(metrics, "_stats", lambda: stats)

    try:
        specs = {
            NOT_STARTED: SeedSpec(cid=NOT_STARTED, notes=20),
            IN_PROGRESS: SeedSpec(cid=IN_PROGRESS, notes=40),
            HALTED: SeedSpec(cid=HALTED, notes=60, unmapped_person_share=0.15),
            SUCCESS: SeedSpec(cid=SUCCESS, notes=40),
            WITH_ERRORS: SeedSpec(cid=WITH_ERRORS, notes=60, unmapped_person_share=0.15),
        }
        seeded = {cid: seed_cid(spec) for cid, spec in specs.items()}

        def conf(cid: int, **extra: Any) -> dict:
            return {"cid": cid, "company_sso_id": specs[cid].company_sso_id, "batch_size": 20, **extra}

        runs: dict[int, Any] = {}
        # validate and what follows never run: the job stays in_progress with every page migrated
        runs[IN_PROGRESS] = run_migration(
            migration_dag,
            mp,
            conf(IN_PROGRESS),
            crm=crm,
            cdp=cdp,
            mark_success_pattern="^(validate|choose_outcome|send_alerts|no_alert|finalise)$",
        )
        # ... and Airflow still sees the run as running (dag.test() ended it): otherwise the status would
        # rightly report a finished run whose job never finished as halted / RUN_FAILED
        set_run_state(runs[IN_PROGRESS].run_id, "running")
        # coverage passes a lowered gate, then the first page's CONTACT_NOT_MAPPED failures exceed 1%: halted
        runs[HALTED] = run_migration(migration_dag, mp, conf(HALTED), crm=crm, cdp=cdp, settings={"coverage_gate": 0.5})
        runs[SUCCESS] = run_migration(migration_dag, mp, conf(SUCCESS), crm=crm, cdp=cdp)
        # failures tolerated by a raised threshold, but validation finds < 99% of the notes: completed_with_errors
        edge.status_code = 400
        runs[WITH_ERRORS] = run_migration(
            migration_dag,
            mp,
            conf(WITH_ERRORS),
            crm=crm,
            cdp=cdp,
            settings={"coverage_gate": 0.5, "max_failure_rate": 0.5},
        )
        edge.status_code = 202
    finally:
        mp.undo()
    yield Fleet(runs=runs, seeded=seeded, pagerduty=edge, stats=stats)


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
