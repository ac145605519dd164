"""docker-compose.yaml follows Airflow 3's official pattern and the project's rules (pure: reads the YAML;
`docker compose config` only where a Docker CLI and engine exist)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())  # safe_load resolves anchors and `<<`
SERVICES = COMPOSE["services"]
AIRFLOW = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"]
ONE_SHOT = {"airflow-init", "minio-buckets", "crm-seed"}
DEPENDENCIES = ["postgres", "redis", "crm-postgres", "cdp-mongo", "minio"]


def depends(service: str) -> dict[str, str]:
    deps = SERVICES[service].get("depends_on") or {}
    return (
        {name: "service_started" for name in deps}
        if isinstance(deps, list)
        else {k: v["condition"] for k, v in deps.items()}
    )


def test_the_services_of_the_official_pattern_and_the_dev_dependencies():
    assert "x-airflow-common" in COMPOSE
    assert set(AIRFLOW + DEPENDENCIES) | ONE_SHOT <= set(SERVICES)
    assert "standalone" not in (ROOT / "docker-compose.yaml").read_text()
    assert SERVICES["cdp-mongo"]["image"] == "mongo:7"
    commands = {s: SERVICES[s].get("command") for s in AIRFLOW}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
        "airflow-worker": "celery worker",
    }


@pytest.mark.parametrize("service", AIRFLOW + ["airflow-init", "crm-seed"])
def test_every_airflow_service_runs_the_project_image_with_the_common_environment(service):
    svc = SERVICES[service]
    assert svc["build"] == "." and svc["image"] == COMPOSE["x-airflow-common"]["image"]
    env = svc["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert (
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
        and "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    )
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://") and "@redis:" in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    for conn in ("CRM_POSTGRES", "CDP_MONGO", "CRM_S3", "CDP_S3", "SLACK_ALERTS", "PAGERDUTY_EVENTS"):
        assert f"AIRFLOW_CONN_{conn}" in env
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in env  # nothing installed at container start
    assert "pip install" not in str(svc.get("command", "")) + str(svc.get("entrypoint", ""))


@pytest.mark.parametrize("service", AIRFLOW)
def test_airflow_services_wait_for_init_and_healthy_infrastructure(service):
    deps = depends(service)
    assert deps["airflow-init"] == "service_completed_successfully"
    for infra in DEPENDENCIES:
        assert deps[infra] == "service_healthy", (service, infra)


def test_init_waits_for_the_databases_and_loads_the_settings():
    deps = depends("airflow-init")
    assert deps["postgres"] == deps["redis"] == "service_healthy"
    command = "\n".join(SERVICES["airflow-init"]["command"])
    assert "airflow db migrate" in command and "local_settings.py load" in command
    assert depends("airflow-worker")["airflow-apiserver"] == "service_healthy"
    assert depends("crm-seed")["minio-buckets"] == "service_completed_successfully"
    assert depends("minio-buckets")["minio"] == "service_healthy"


@pytest.mark.parametrize("service", sorted(set(AIRFLOW + DEPENDENCIES)))
def test_every_long_running_service_has_a_healthcheck(service):
    test = SERVICES[service]["healthcheck"]["test"]
    assert test and test[0] in ("CMD", "CMD-SHELL")


def test_every_published_port_is_loopback_only():
    published = [(name, p) for name, svc in SERVICES.items() for p in svc.get("ports", [])]
    assert {name for name, _ in published} >= {"airflow-apiserver", "crm-postgres", "cdp-mongo", "minio"}
    for name, port in published:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
    # infrastructure that nothing outside needs is not published at all
    assert "ports" not in SERVICES["postgres"] and "ports" not in SERVICES["redis"]


def test_dev_services_carry_the_crm_schema_and_both_buckets():
    [schema] = [v for v in SERVICES["crm-postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert (ROOT / schema.split(":")[0]).resolve() == (ROOT / "devtools/crm_schema.sql").resolve()
    buckets = SERVICES["minio-buckets"]["entrypoint"]
    assert "crm-assets" in buckets and "cdp-files" in buckets
    assert SERVICES["crm-seed"]["entrypoint"] == ["python", "-m", "devtools.seed", "--demo"]


def test_every_bind_mount_source_exists():
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, volume)


def test_the_image_installs_the_runtime_requirements_and_the_package_only():
    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = [line for line in dockerfile.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    text = "\n".join(lines)
    assert re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:3\.3\.2(-python3\.11)?$", text, re.M)
    assert re.search(r"^FROM \$\{AIRFLOW_IMAGE\}$", text, re.M)
    assert "pip install --no-cache-dir -r requirements.txt -c constraints.txt" in text
    assert "requirements-dev" not in text
    assert re.search(r"pip install --no-cache-dir --no-deps \.", text)  # the package, from pyproject.toml
    assert "COPY --chown=airflow:0 include ./include" in text
    runtime = (ROOT / "requirements.txt").read_text()
    for dev_tool in ("pytest", "moto", "ruff", "mypy", "hypothesis", "selectolax"):
        assert dev_tool not in runtime
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".build", ".git", "tests"} <= set(ignored)


def _docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    info = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return info.returncode == 0 and compose.returncode == 0


def test_docker_compose_config_accepts_the_file():
    if not _docker_engine():
        pytest.skip("needs the docker CLI with compose and a running engine")
    run = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr


def test_docker_compose_v1_validates_the_file_offline():
    """Debian's docker-compose 1.29 validates a file without an engine (where it is installed)."""
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose (v1) not installed")
    run = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
