"""The CLI answers as the API does (the same functions of notes_migration.ops.queries) and writes its JSON alone on
stdout, all logging on stderr: run as a real subprocess in the environment of `source scripts/env.sh` (the test
session's own Airflow metadata DB, where the fleet's runs are, wins over env.sh's default, as env.sh intends).

CIDs used here: the fleet's (3001–3005).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from notes_migration.domain.config import job_id_for
from tests.plugin.plugin_support import HALTED, PREFIX, SUCCESS

ROOT = Path(__file__).resolve().parents[2]


def _job(fleet, cid: int) -> str:
    return job_id_for(fleet.runs[cid].run_id, cid)


@pytest.fixture(scope="module")
def cli(fleet) -> dict[str, tuple[int, str, str]]:
    """Each command's (exit code, stdout, stderr); the subprocesses run side by side."""
    halted = _job(fleet, HALTED)
    commands = {
        "status": ["status", "--cid", str(HALTED)],
        "errors": ["errors", "--job-id", halted],
        "errors-all": ["errors", "--job-id", halted, "--outcome", "all"],
        "errors-unknown": ["errors", "--job-id", "no-such-job"],
        "rollback": ["rollback", "--cid", str(SUCCESS)],
    }
    python = shlex.quote(os.environ.get("VENV", str(ROOT / ".venv")) + "/bin/python")
    running = {
        name: subprocess.Popen(
            ["bash", "-c", f'source scripts/env.sh && exec {python} -m crm_notes_migration_ops.cli "$@"', "cli", *args],
            cwd=ROOT,
            env={**os.environ, "USER": "ops-cli-test"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    out = {}
    for name, proc in running.items():
        stdout, stderr = proc.communicate(timeout=300)
        out[name] = (proc.returncode, stdout, stderr)
    return out


def _answer(result: tuple[int, str, str]) -> Any:
    code, stdout, stderr = result
    try:
        return json.loads(stdout)  # the whole of stdout: one JSON document, nothing else
    except json.JSONDecodeError:
        pytest.fail(f"stdout is not JSON alone (exit {code}):\n{stdout[:2000]}\n--- stderr:\n{stderr[-2000:]}")


@pytest.mark.parametrize("name", ["status", "errors", "rollback"])
def test_stdout_is_the_json_answer_alone(cli, name):
    assert cli[name][0] == 0, cli[name][2][-3000:]
    assert isinstance(_answer(cli[name]), dict)


def test_status_is_the_apis(cli, client, auth, fleet):
    api = client.get(f"{PREFIX}/api/status", params={"cid": HALTED}, headers=auth).json()
    mine = _answer(cli["status"])
    keys = ("cid", "status", "job_id", "run_id", "halted_reason", "failure_rate", "error_log_url", "counts")
    assert {k: mine.get(k) for k in keys} == {k: api.get(k) for k in keys}


@pytest.mark.parametrize(("name", "outcome"), [("errors", "errors"), ("errors-all", "all")])
def test_errors_are_the_apis_json_rows(cli, client, auth, fleet, name, outcome):
    job_id = _job(fleet, HALTED)
    api = client.get(
        f"{PREFIX}/api/jobs/{job_id}/errors", params={"format": "json", "outcome": outcome}, headers=auth
    ).json()
    assert api["count"] > 0
    assert _answer(cli[name]) == api


def test_a_dry_run_rollback_is_the_apis(cli, client, auth):
    mine = _answer(cli["rollback"])
    assert mine["dry_run"] is True and mine["notes_to_delete"] > 0
    api = client.post(f"{PREFIX}/api/cids/{SUCCESS}/rollback", headers=auth)
    assert api.status_code == 200, api.text
    assert mine == api.json()


def test_a_refusal_exits_3_with_the_apis_body(cli, client, auth):
    code, _stdout, _stderr = cli["errors-unknown"]
    mine = _answer(cli["errors-unknown"])
    api = client.get(f"{PREFIX}/api/jobs/no-such-job/errors", headers=auth)
    assert (code, mine["refused"], api.status_code) == (3, "JOB_NOT_FOUND", 404)
    assert {k: v for k, v in mine.items() if k != "refused"} == api.json()
