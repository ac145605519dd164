"""The two writers of the writer seam as one test fixture (conftest's `writer`, params mongo and http): the same
end-to-end scenarios run on both, faults included. On the HTTP path the target is the reference implementation
(devtools/cdp_notes_api.py) served in this process on a loopback port, over the tests' CDP database, behind a
fault switch (500 once, 500 for good, 401, a slow answer); on the Mongo path the same faults are a failing
insert_many (a slow answer and a refused token have no Mongo twin: those scenarios skip there)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

S2S_TOKEN = "test-s2s-token"
USER_TOKEN = "test-user-token"


@dataclass
class Faults:
    """What the next writes meet. `fail_next`: that many writes fail (500 / a dropped connection) then pass;
    `fail_always`: every write fails; `unauthorized`: every write is refused 401; `slow_next`: that many
    writes answer after `delay` seconds (the HTTP writer's timeout is shorter)."""

    fail_next: int = 0
    fail_always: bool = False
    unauthorized: bool = False
    slow_next: int = 0
    delay: float = 0.0
    seen: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.fail_next, self.fail_always, self.unauthorized, self.slow_next, self.delay = 0, False, False, 0, 0.0
        self.seen.clear()

    def take_failure(self) -> bool:
        if self.fail_always:
            return True
        if self.fail_next > 0:
            self.fail_next -= 1
            return True
        return False

    def take_delay(self) -> float:
        if self.slow_next > 0:
            self.slow_next -= 1
            return self.delay
        return 0.0


class FaultyApp:
    """ASGI wrapper of the reference app: the write requests (POST under /cdp/notes/migrate) meet `faults`."""

    def __init__(self, app: Any, faults: Faults):
        self.app, self.faults = app, faults

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith("/cdp/notes/migrate"):
            self.faults.seen.append(scope["path"])
            status = 401 if self.faults.unauthorized else 500 if self.faults.take_failure() else None
            if status is not None:
                body = json.dumps({"detail": f"injected {status}"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            delay = self.faults.take_delay()
            if delay:
                await asyncio.sleep(delay)
        await self.app(scope, receive, send)


@dataclass
class ReferenceApi:
    url: str
    port: int
    faults: Faults
    server: Any

    def connection(self, token: str = S2S_TOKEN) -> str:
        """The `cdp_notes_api` connection pointing here (AIRFLOW_CONN_CDP_NOTES_API)."""
        return json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": self.port, "schema": "http", "password": token}
        )

    def stop(self) -> None:
        self.server.should_exit = True


def start_reference_api(db) -> ReferenceApi:
    """The reference implementation on a free loopback port, in a thread of this process."""
    import uvicorn

    from devtools.cdp_notes_api import create_app
    from devtools.ports import free_port

    faults = Faults()
    app = FaultyApp(create_app(db, s2s_tokens=[S2S_TOKEN], user_tokens=[USER_TOKEN]), faults)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, name="cdp-notes-api", daemon=True).start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the reference CDP notes API did not start")
        time.sleep(0.05)
    return ReferenceApi(f"http://127.0.0.1:{port}", port, faults, server)


class FlakyCollection:
    """contact_notes for the Mongo writer, its insert_many meeting `faults` (a dropped connection)."""

    def __init__(self, real: Any, faults: Faults):
        self.real, self.faults = real, faults

    def insert_many(self, docs, *args, **kwargs):
        from pymongo.errors import AutoReconnect

        self.faults.seen.append("insert_many")
        if self.faults.take_failure():
            raise AutoReconnect("injected: connection dropped")
        return self.real.insert_many(docs, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@dataclass
class Writer:
    """One writer as the scenarios see it: its name, the settings Variable that selects it, and its faults."""

    name: str
    faults: Faults
    api: ReferenceApi | None = None

    @property
    def settings(self) -> dict[str, Any]:
        if self.name == "http":  # a short timeout so the slow scenario stays short; the count retried quickly
            return {"writer": "http", "cdp_api_timeout_seconds": 1.0, "cdp_api_count_retries": 1}
        return {"writer": "mongo"}

    def skip_unless_http(self, why: str) -> None:
        import pytest

        if self.name != "http":
            pytest.skip(f"mongo writer: {why}")
