"""airflow_settings.yaml is the single source of the local connections: scripts/env.sh exports what
scripts/local_settings.py generates from it, an exported AIRFLOW_CONN_* wins, and the loopback ports
of env.sh move with the services."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {
    "conn_type": "conn_type",
    "conn_host": "host",
    "conn_port": "port",
    "conn_schema": "schema",
    "conn_login": "login",
    "conn_password": "password",
    "conn_extra": "extra",
}
PORT_VARS = ("CRM_PG_PORT", "CDP_MONGO_PORT", "S3_PORT", "ALERT_SINK_PORT", "CDP_NOTES_API_PORT")


def settings() -> dict:
    return yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())


def env_connections(**extra: str) -> dict[str, dict | str]:
    """The AIRFLOW_CONN_* that `source scripts/env.sh` exports in a clean environment (plus `extra`)."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("AIRFLOW_CONN_", "CRM_PG", "CDP_MONGO", "CDP_NOTES_API", "S3_PORT", "ALERT_SINK", "FERRETDB")
        )
    }
    out = subprocess.run(
        ["bash", "-c", f"source {ROOT}/scripts/env.sh && env -0"],
        capture_output=True,
        check=True,
        env={**clean, **extra},
    ).stdout
    conns: dict[str, dict | str] = {}
    for item in out.split(b"\0"):
        key, _, value = item.decode().partition("=")
        if key.startswith("AIRFLOW_CONN_"):
            conns[key.removeprefix("AIRFLOW_CONN_").lower()] = json.loads(value) if value.startswith("{") else value
    return conns


def yaml_connections() -> dict[str, dict]:
    return {
        c["conn_id"]: {FIELDS[k]: v for k, v in c.items() if k != "conn_id"}
        for c in settings()["airflow"]["connections"]
    }


def test_env_sh_exports_exactly_the_yaml_connections():
    from_yaml = yaml_connections()
    assert env_connections() == from_yaml
    assert {"crm_postgres", "cdp_mongo", "crm_s3", "cdp_s3", "slack_alerts", "pagerduty_events"} <= set(from_yaml)


def test_env_sh_repeats_no_connection():
    text = (ROOT / "scripts/env.sh").read_text()
    assert "conn_type" not in text and "local-secret" not in text and "crm-assets" not in text


def test_an_exported_connection_wins_over_the_yaml():
    uri = "postgresql://reader:secret@crm-replica.internal:5432/crm"
    conns = env_connections(AIRFLOW_CONN_CRM_POSTGRES=uri)
    assert conns["crm_postgres"] == uri
    assert conns["cdp_mongo"] == yaml_connections()["cdp_mongo"]


def test_moved_loopback_ports_move_in_every_connection():
    conns = env_connections(CRM_PG_PORT="15432", S3_PORT="19333", ALERT_SINK_PORT="19337")
    assert conns["crm_postgres"]["port"] == 15432
    assert conns["cdp_mongo"]["port"] == 27117  # not moved
    for conn_id in ("crm_s3", "cdp_s3"):
        assert conns[conn_id]["extra"]["endpoint_url"] == "http://127.0.0.1:19333"
    assert conns["slack_alerts"]["password"] == "http://127.0.0.1:19337/slack/local-dev"


def test_the_yaml_port_defaults_are_env_sh_defaults():
    env_sh = (ROOT / "scripts/env.sh").read_text()
    defaults = dict(re.findall(r'export (\w+)="\$\{\1:-(\d+)\}"', env_sh))
    assert settings()["x-local-ports"] == {var: int(defaults[var]) for var in PORT_VARS}


def test_every_local_endpoint_is_loopback():
    hosts = []
    for conn in env_connections().values():
        assert isinstance(conn, dict)
        if conn.get("host"):
            hosts.append(conn["host"])
        for url in ((conn.get("extra") or {}).get("endpoint_url"), conn.get("password")):
            if isinstance(url, str) and "://" in url:
                hosts.append(urlparse(url).hostname)
    assert len(hosts) >= 5 and set(hosts) == {"127.0.0.1"}


def test_the_flag_variable_lists_the_demo_cids():
    variables = {v["variable_name"]: v["variable_value"] for v in settings()["airflow"]["variables"]}
    assert json.loads(variables["crm_notes_migration_enabled"]) == [100, 5000]


@pytest.mark.parametrize("name", [None, "worker-2"])
def test_worker_hostname_callable(monkeypatch, name):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import local_settings
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    if name:
        monkeypatch.setenv("AIRFLOW_WORKER_HOSTNAME", name)
    else:
        monkeypatch.delenv("AIRFLOW_WORKER_HOSTNAME", raising=False)
    assert local_settings.hostname() == (name or __import__("socket").getfqdn())


def test_an_unknown_connection_field_is_refused(tmp_path):
    bad = tmp_path / "settings.yaml"
    bad.write_text("airflow:\n  connections:\n    - {conn_id: x, conn_type: http, conn_hots: 127.0.0.1}\n")
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts/local_settings.py"), "env"],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRFLOW_SETTINGS_FILE": str(bad)},
    )
    assert run.returncode != 0 and "conn_hots" in run.stderr
