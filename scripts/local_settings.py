"""airflow_settings.yaml is the one source of the local Airflow objects; this turns it into what
the project's scripts need.

    python3 scripts/local_settings.py env         # `export AIRFLOW_CONN_…=…` lines (sourced by scripts/env.sh)
    .venv/bin/python scripts/local_settings.py load              # connections, variables, pools into the metadata DB
    .venv/bin/python scripts/local_settings.py unpause --timeout 120   # wait for dags/ to be parsed, unpause its DAGs

`env` needs only PyYAML (the venv's or the system python's). A connection already exported as
AIRFLOW_CONN_<ID> wins over the yaml; a loopback port moved by an exported variable (the
`x-local-ports` section: CRM_PG_PORT, CDP_MONGO_PORT, S3_PORT, ALERT_SINK_PORT, CDP_NOTES_API_PORT) moves with it in
every connection (`conn_port` and any `127.0.0.1:<port>` URL). `load` writes the same effective
connections, so the UI shows what the workers use.

`hostname()` is the `[core] hostname_callable` of the Celery workers scripts/airflow.sh starts:
several workers on one machine report distinct task-instance hostnames (AIRFLOW_WORKER_HOSTNAME).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_FILE = Path(os.environ.get("AIRFLOW_SETTINGS_FILE", ROOT / "airflow_settings.yaml"))
# Astro's airflow_settings.yaml field → Airflow's JSON connection field (AIRFLOW_CONN_* format)
CONN_FIELDS = {
    "conn_type": "conn_type",
    "conn_host": "host",
    "conn_port": "port",
    "conn_schema": "schema",
    "conn_login": "login",
    "conn_password": "password",
    "conn_extra": "extra",
}
LOOPBACK = "127.0.0.1"


def hostname() -> str:
    """Task-instance hostname of a worker: AIRFLOW_WORKER_HOSTNAME, else the machine's FQDN."""
    return os.environ.get("AIRFLOW_WORKER_HOSTNAME") or socket.getfqdn()


def read_settings(path: Path = SETTINGS_FILE) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load(path.read_text()) or {}
    return doc


def _moved_ports(doc: dict[str, Any], environ: dict[str, str]) -> dict[int, int]:
    """Default loopback port → the port an exported variable moved it to."""
    moved = {}
    for var, default in (doc.get("x-local-ports") or {}).items():
        value = environ.get(var)
        if value and int(value) != int(default):
            moved[int(default)] = int(value)
    return moved


def _move(value: Any, moved: dict[int, int]) -> Any:
    if isinstance(value, dict):
        return {k: _move(v, moved) for k, v in value.items()}
    if isinstance(value, list):
        return [_move(v, moved) for v in value]
    if isinstance(value, str):
        for old, new in moved.items():
            value = value.replace(f"{LOOPBACK}:{old}", f"{LOOPBACK}:{new}")
    return value


def yaml_connections(doc: dict[str, Any], environ: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The yaml's connections in Airflow's JSON format, loopback ports moved as the environment says."""
    moved = _moved_ports(doc, environ)
    out: dict[str, dict[str, Any]] = {}
    for item in (doc.get("airflow") or {}).get("connections") or []:
        unknown = set(item) - set(CONN_FIELDS) - {"conn_id"}
        if unknown:
            raise SystemExit(f"{SETTINGS_FILE}: connection {item.get('conn_id')}: unknown fields {sorted(unknown)}")
        conn = {CONN_FIELDS[k]: v for k, v in item.items() if k != "conn_id" and v is not None}
        if isinstance(conn.get("port"), int) and conn["port"] in moved:
            conn["port"] = moved[conn["port"]]
        out[item["conn_id"]] = _move(conn, moved)
    return out


def env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def effective_connections(doc: dict[str, Any], environ: dict[str, str]) -> dict[str, str]:
    """conn_id → the AIRFLOW_CONN_* value the processes see: an exported one, else the yaml's (JSON)."""
    return {
        conn_id: environ.get(env_var(conn_id)) or json.dumps(conn)
        for conn_id, conn in yaml_connections(doc, environ).items()
    }


def cmd_env(_args: argparse.Namespace) -> int:
    for conn_id, value in effective_connections(read_settings(), dict(os.environ)).items():
        print(f"export {env_var(conn_id)}={shlex.quote(value)}")
    return 0


def cmd_load(_args: argparse.Namespace) -> int:
    """Upsert the connections, variables and pools into the metadata DB (the yaml's values win)."""
    from airflow.models.connection import Connection
    from airflow.models.pool import Pool
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    doc = read_settings()
    settings = doc.get("airflow") or {}
    conns = effective_connections(doc, dict(os.environ))
    with create_session() as session:
        for conn_id, value in conns.items():
            new = (
                Connection.from_json(value, conn_id=conn_id)
                if value.lstrip().startswith("{")
                else Connection(conn_id=conn_id, uri=value)
            )
            old = session.scalar(select(Connection).where(Connection.conn_id == conn_id))
            if old is not None:
                session.delete(old)
                session.flush()
            session.add(new)
    for var in settings.get("variables") or []:
        value = var["variable_value"]
        Variable.set(var["variable_name"], value if isinstance(value, str) else json.dumps(value))
    for pool in settings.get("pools") or []:
        Pool.create_or_update_pool(
            name=pool["pool_name"],
            slots=int(pool["pool_slot"]),
            description=pool.get("pool_description", ""),
            include_deferred=bool(pool.get("include_deferred", False)),
        )
    print(
        f"[settings] loaded {len(conns)} connections, {len(settings.get('variables') or [])} variables, "
        f"{len(settings.get('pools') or [])} pools from {SETTINGS_FILE.name}",
        file=sys.stderr,
    )
    return 0


def _dag_files(folder: Path) -> set[str]:
    """The files of the DAG folder the DAG processor parses (safe mode: they mention both words)."""
    files = set()
    for path in folder.rglob("*.py"):
        text = path.read_text(errors="ignore").lower()
        if not path.name.startswith((".", "_")) and "airflow" in text and "dag" in text:
            files.add(str(path.resolve()))
    return files


def cmd_unpause(args: argparse.Namespace) -> int:
    """Wait until every file of the DAG folder is parsed (as DAGs or as import errors), then unpause its DAGs."""
    from airflow.models.dag import DagModel
    from airflow.models.errors import ParseImportError
    from airflow.utils.session import create_session
    from sqlalchemy import select

    folder = Path(args.dags_folder).resolve()
    wanted = _dag_files(folder)
    deadline = time.monotonic() + args.timeout
    while True:
        with create_session() as session:
            dags = session.execute(
                select(DagModel.dag_id, DagModel.fileloc, DagModel.is_paused).where(DagModel.is_stale.is_(False))
            ).all()
            errors = session.execute(select(ParseImportError.filename, ParseImportError.stacktrace)).all()
        ours = [d for d in dags if d.fileloc and Path(d.fileloc).resolve().is_relative_to(folder)]
        seen = {str(Path(d.fileloc).resolve()) for d in ours}
        failed = {str((folder / e.filename).resolve()): e.stacktrace for e in errors}
        if wanted <= seen | set(failed):
            break
        if time.monotonic() > deadline:
            missing = sorted(wanted - seen - set(failed))
            print(f"[settings] DAG files not parsed within {args.timeout} s: {missing}", file=sys.stderr)
            return 1
        time.sleep(1)
    with create_session() as session:
        for dag in ours:
            if dag.is_paused:
                session.get(DagModel, dag.dag_id).is_paused = False
    print(f"[settings] unpaused: {', '.join(sorted(d.dag_id for d in ours)) or '(none)'}", file=sys.stderr)
    for filename, trace in failed.items():
        if filename in wanted:
            print(f"[settings] import error in {filename}:\n{trace}", file=sys.stderr)
    return 1 if set(failed) & wanted else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env", help="print the AIRFLOW_CONN_* exports").set_defaults(func=cmd_env)
    sub.add_parser("load", help="load connections, variables and pools into the metadata DB").set_defaults(
        func=cmd_load
    )
    unpause = sub.add_parser("unpause", help="unpause every DAG of the DAG folder once parsed")
    unpause.add_argument("--dags-folder", default=os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags")))
    unpause.add_argument("--timeout", type=float, default=120)
    unpause.set_defaults(func=cmd_unpause)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
