"""The fleet: five CIDs, one per PRD §8 state, each put there by a real run of the DAG (dag.test()), and the
SaaS edges those runs alert through (PagerDuty intercepted at its HTTP edge, a local Slack webhook, Airflow
Stats recorded). tests/conftest.py builds it once per session (`fleet`) for the tiers that read it: the Ops
surface (tests/plugin) and the events, metrics and alerts of real runs (tests/integration).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.cids import cids
from tests.helpers import run_migration, set_run_state

PD_ROUTING_KEY = "local-test-routing-key"
NOT_STARTED, IN_PROGRESS, HALTED, SUCCESS, WITH_ERRORS = cids(__name__)


# --------------------------------------------------------------------------- the SaaS edges


@dataclass
class PagerDutyEdge:
    """Stands in for events.pagerduty.com: the provider's client sends real HTTP requests to this transport."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    status_code: int = 202

    def handler(self, request):
        import httpx2  # the HTTP client the pagerduty SDK is built on

        body = json.loads(request.content)
        self.requests.append({"url": str(request.url), "json": body})
        if self.status_code >= 400:
            return httpx2.Response(self.status_code, json={"status": "invalid event", "errors": ["test"]})
        return httpx2.Response(202, json={"status": "success", "dedup_key": body.get("dedup_key") or "generated"})

    def for_cid(self, cid: int) -> list[dict[str, Any]]:
        return [r["json"] for r in self.requests if r["json"]["payload"]["custom_details"]["cid"] == cid]


def install_pagerduty_edge(mp: pytest.MonkeyPatch) -> PagerDutyEdge:
    """Route the real PagerDuty client's HTTP through a mock transport that records the events."""
    import httpx2
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


def start_slack_webhook() -> tuple[ThreadingHTTPServer, str]:
    """A local Slack incoming-webhook server on 127.0.0.1 (its `received` list) and its URL; shut it down after."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlackHandler)
    server.received = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/local"


class StatsRecorder:
    """Stands in for Airflow's Stats: records every counter and timer."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, dict]] = []

    def incr(self, stat: str, count: int = 1, rate: Any = None, *, tags: dict | None = None) -> None:
        self.calls.append(("incr", stat, count, tags or {}))

    def timing(self, stat: str, dt: Any, *, tags: dict | None = None) -> None:
        self.calls.append(("timing", stat, dt, tags or {}))

    def total(self, stat: str, cid: int | None = None) -> int:
        return sum(
            c[2] for c in self.calls if c[0] == "incr" and c[1] == stat and (cid is None or c[3].get("cid") == str(cid))
        )

    def timings(self, stat: str, cid: int | None = None) -> list[Any]:
        return [
            c[2]
            for c in self.calls
            if c[0] == "timing" and c[1] == stat and (cid is None or c[3].get("cid") == str(cid))
        ]


# --------------------------------------------------------------------------- CIDs in each state, by real runs


@dataclass
class Fleet:
    runs: dict[int, Any]
    seeded: dict[int, dict]
    pagerduty: PagerDutyEdge
    stats: StatsRecorder


def build_fleet(seed_cid, migration_dag, crm, cdp) -> Fleet:
    """Five CIDs, one per PRD §8 state, each put there by a real run of the DAG (dag.test()).

    The runs alert through the real providers' hooks: PagerDuty is intercepted at
    its HTTP edge (the halted run's P1 is delivered; the completed_with_errors
    run's P2 gets an HTTP 400, so it is undeliverable), and Airflow Stats go to a
    recorder. Each run is checked for conservation (tests/helpers.assert_conserved)."""
    from devtools.seed import SeedSpec
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
            mark_success_pattern="^(validate|send_alerts|finalise)$",
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
    return Fleet(runs=runs, seeded=seeded, pagerduty=edge, stats=stats)
