"""airflow_settings.yaml (Astro) and scripts/env.sh (the project's scripts) describe the same connections."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

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


def env_connections() -> dict[str, dict]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW_CONN_", "CRM_PG", "CDP_MONGO", "S3_PORT", "ALERT_SINK", "FERRETDB"))
    }
    out = subprocess.run(
        ["bash", "-c", f"source {ROOT}/scripts/env.sh && env -0"], capture_output=True, check=True, env=clean
    ).stdout
    conns = {}
    for item in out.split(b"\0"):
        key, _, value = item.decode().partition("=")
        if key.startswith("AIRFLOW_CONN_"):
            conns[key.removeprefix("AIRFLOW_CONN_").lower()] = json.loads(value)
    return conns


def test_airflow_settings_match_the_scripts_environment():
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())["airflow"]
    from_yaml = {c["conn_id"]: {FIELDS[k]: v for k, v in c.items() if k != "conn_id"} for c in settings["connections"]}
    assert from_yaml == env_connections()
    assert {"crm_postgres", "cdp_mongo", "crm_s3", "cdp_s3", "slack_alerts", "pagerduty_events"} <= set(from_yaml)


def test_every_local_endpoint_is_loopback():
    from urllib.parse import urlparse

    hosts = []
    for conn in env_connections().values():
        if conn.get("host"):
            hosts.append(conn["host"])
        for url in ((conn.get("extra") or {}).get("endpoint_url"), conn.get("password")):
            if isinstance(url, str) and "://" in url:
                hosts.append(urlparse(url).hostname)
    assert len(hosts) >= 5 and set(hosts) == {"127.0.0.1"}
