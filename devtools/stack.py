"""A real Airflow started by `scripts/airflow.sh up` (api-server, scheduler, dag-processor, triggerer;
LocalExecutor, or CeleryExecutor with Redis and two workers) for the stack test tier (tests/stack) and the
stack and fleet benchmarks: on ports of its own (free loopback ports picked at start, so it never collides
with a developer's running stack), its own state directory, a fresh metadata database and the CDP database
its caller names (devtools/cdp_db.py: never the dev stack's), torn down by `close()`.

Callers talk to it only over HTTP with a real JWT from `POST /auth/token`. One stack runs at a time (the
machine has two cores): asking for the Celery stack switches the running one to the CeleryExecutor
(`scripts/airflow.sh up --executor celery` restarts the scheduler with Redis and two workers).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devtools.cdp_db import use_database
from devtools.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_SH = ROOT / "scripts" / "airflow.sh"
DAG_ID = "crm_notes_migration"
PREFIX = "/crm-notes-migration"
UP_TIMEOUT_S = 300  # bootstrap + services + db migrate + every component healthy (≈ 45 s here)
RUN_TIMEOUT_S = 240  # one CID run, triggered to terminal state
TERMINAL = {"completed_success", "completed_with_errors", "halted"}


def wait_until(what: str, timeout: float, probe: Callable[[], tuple[bool, Any]], interval: float = 1.0) -> Any:
    """Poll `probe` (→ (done, observed)) until done; return what it observed, or fail saying what was
    awaited and what was seen last."""
    deadline = time.monotonic() + timeout
    observed: Any = None
    while time.monotonic() < deadline:
        done, observed = probe()
        if done:
            return observed
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {observed!r}")


@dataclass
class Stack:
    """A running stack: its base URL, a real JWT per user, and the HTTP calls the tests make."""

    executor: str
    env: dict[str, str]
    base_url: str
    state_dir: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, user: str = "ops") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def token(self, user: str) -> str:
        passwords = json.loads(Path(self.env["PASSWORDS_FILE"]).read_text())
        resp = httpx.post(
            f"{self.base_url}/auth/token", json={"username": user, "password": passwords[user]}, timeout=30
        )
        assert resp.status_code == 201, f"POST /auth/token as {user}: {resp.status_code} {resp.text}"
        return resp.json()["access_token"]

    def flag(self) -> str:
        """The feature flag Variable's raw value, through Airflow's REST API (admin)."""
        with self.client("admin") as c:
            resp = c.get("/api/v2/variables/crm_notes_migration_enabled")
        assert resp.status_code == 200, resp.text
        return resp.json()["value"]

    def set_flag(self, cids: list[int]) -> None:
        """The feature flag Variable, through Airflow's REST API (admin)."""
        with self.client("admin") as c:
            resp = c.patch(
                "/api/v2/variables/crm_notes_migration_enabled",
                json={"key": "crm_notes_migration_enabled", "value": json.dumps(cids)},
            )
        assert resp.status_code == 200, resp.text

    def trigger(self, body: dict[str, Any]) -> httpx.Response:
        with self.client("ops") as c:
            return c.post(f"{PREFIX}/api/jobs", json=body)

    def status(self, cid: int) -> dict[str, Any]:
        with self.client("ops") as c:
            resp = c.get(f"{PREFIX}/api/status", params={"cid": cid})
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait_terminal(
        self, cid: int, run_id: str, timeout: float = RUN_TIMEOUT_S, seen: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Poll the status endpoint until the CID's job of this run is terminal, then its Airflow run too (every
        status polled on the way is appended to `seen` when given)."""

        def probe() -> tuple[bool, dict[str, Any]]:
            status = self.status(cid)
            if seen is not None:
                seen.append(status)
            return status.get("run_id") == run_id and status["status"] in TERMINAL, status

        def run_done() -> tuple[bool, str]:
            state = self.dag_run(run_id)["state"]
            return state in ("success", "failed"), state

        status = wait_until(f"CID {cid} (run {run_id}) to reach a terminal status", timeout, probe, 2)
        status["_dag_run_state"] = wait_until(f"Airflow run {run_id} to finish (teardown included)", 120, run_done, 2)
        return status

    def dag_run(self, run_id: str) -> dict[str, Any]:
        with self.client("admin") as c:
            resp = c.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def dag_runs(self) -> list[dict[str, Any]]:
        with self.client("admin") as c:
            resp = c.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100})
        assert resp.status_code == 200, resp.text
        return resp.json()["dag_runs"]

    def task_instances(self, run_id: str, task_id: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 1000}
        if task_id:
            params["task_id"] = task_id
        with self.client("admin") as c:
            resp = c.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params=params)
        assert resp.status_code == 200, resp.text
        return resp.json()["task_instances"]


class StackManager:
    """Starts `scripts/airflow.sh up` on private ports, a fresh metadata DB and the CDP database `cdp_database`
    (the schema of its cdp_mongo connection); at most one stack at a time."""

    def __init__(self, cdp_database: str) -> None:
        self.current: Stack | None = None
        tag = f"{os.getpid()}"
        self.state_dir = ROOT / ".build" / f"stack-pytest-{tag}"
        taken: set[int] = set()
        self.env = {
            **os.environ,
            "AIRFLOW_STACK_DIR": str(self.state_dir),
            "AIRFLOW_DB_NAME": f"airflow_stack_test_{tag}",
            "AIRFLOW_API_PORT": str(free_port(taken)),
            "AIRFLOW_WORKER_LOG_PORT": str(free_port(taken)),
            "AIRFLOW_TRIGGER_LOG_PORT": str(free_port(taken)),
            "AIRFLOW_CELERY_LOG_PORT": str(free_port(taken, span=2)),
            "AIRFLOW_REDIS_PORT": str(free_port(taken)),
            "AIRFLOW_CELERY_WORKERS": "2",
            "AIRFLOW_UI_USERS": "admin:admin,ops:user",
            "AIRFLOW_UP_TIMEOUT": "180",
            "AIRFLOW_SEED_DEMO": "0",  # the callers seed the CIDs they use
        }
        # an exported AIRFLOW_CONN_* wins over airflow_settings.yaml (scripts/env.sh, local_settings.py load);
        # the dev stack's database is refused
        use_database(cdp_database, self.env)
        self.env["PASSWORDS_FILE"] = str(self.state_dir / "home" / "simple_auth_manager_passwords.json.generated")

    def _sh(self, *args: str, timeout: float, **env: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [str(AIRFLOW_SH), *args], env={**self.env, **env}, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"scripts/airflow.sh {' '.join(args)} did not finish in {timeout} s") from exc

    def get(self, executor: str) -> Stack:
        if self.current and self.current.executor == executor:
            return self.current
        started = time.monotonic()
        # a switch keeps the running api-server, dag-processor, triggerer and metadata DB (scripts/airflow.sh)
        fresh = "0" if self.current else "1"
        run = self._sh("up", "--executor", executor, timeout=UP_TIMEOUT_S, AIRFLOW_STACK_FRESH_DB=fresh)
        if run.returncode != 0:
            logs = "\n".join(
                f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                for p in sorted((self.state_dir / "logs").glob("*.log"))
            )
            self._sh("down", timeout=120)
            raise AssertionError(f"scripts/airflow.sh up --executor {executor} failed:\n{run.stderr[-3000:]}\n{logs}")
        stack = Stack(
            executor=executor,
            env=self.env,
            base_url=f"http://127.0.0.1:{self.env['AIRFLOW_API_PORT']}",
            state_dir=self.state_dir,
        )
        stack.tokens = {user: stack.token(user) for user in ("admin", "ops")}
        print(f"\n[stack] {executor} stack up in {time.monotonic() - started:.0f} s at {stack.base_url}")
        self.current = stack
        return stack

    def stop(self) -> None:
        self._sh("down", timeout=120)
        self.current = None

    def close(self) -> None:
        self.stop()
        db = self.env["AIRFLOW_DB_NAME"]
        subprocess.run(
            [
                f"{os.environ.get('PG_BIN', '/usr/lib/postgresql/15/bin')}/psql",
                "-h",
                "127.0.0.1",
                "-p",
                os.environ.get("CRM_PG_PORT", "54329"),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qc",
                f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)',
            ],
            capture_output=True,
            check=False,
        )
        if os.environ.get("KEEP_STACK_STATE") != "1":  # logs of a failed session: KEEP_STACK_STATE=1
            shutil.rmtree(self.state_dir, ignore_errors=True)
