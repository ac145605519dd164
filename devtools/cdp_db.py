"""Which CDP MongoDB database a process writes to: the dev stack's, the tests' or the benchmarks'.

The database is the `schema` of the `cdp_mongo` connection (airflow_settings.yaml: `cdp`, what
`scripts/airflow.sh up` and its Ops view use). Tests and benchmarks keep to databases of their own on
the same server, so their jobs never show up (in progress forever) in a developer's Ops view: they
re-point `AIRFLOW_CONN_CDP_MONGO` at another schema, same host, port and credentials. An
`AIRFLOW_CONN_*` exported before a script runs wins over the yaml (scripts/env.sh), so processes they
start (scripts/airflow.sh, the CLI, page tasks) inherit it.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlsplit, urlunsplit

CONN_VAR = "AIRFLOW_CONN_CDP_MONGO"
TEST_DATABASE = "cdp_test"  # tests/conftest.py (every tier, the stack tier's Airflow included)
BENCH_DATABASE = "cdp_bench"  # benchmarks/ (in-process figures and the stacks they start)


def with_database(conn: str, name: str) -> str:
    """The connection value (Airflow's JSON form, or a URI) with its schema, the database, set to `name`."""
    if conn.lstrip().startswith("{"):
        doc = json.loads(conn)
        doc["schema"] = name
        return json.dumps(doc)
    parts = urlsplit(conn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_of(conn: str) -> str | None:
    """The schema (database name) of a connection value, JSON or URI."""
    if conn.lstrip().startswith("{"):
        return json.loads(conn).get("schema")
    return urlsplit(conn).path.lstrip("/") or None


def dev_database() -> str:
    """The database the dev stack uses: the schema of cdp_mongo in airflow_settings.yaml."""
    from scripts.local_settings import read_settings, yaml_connections

    return yaml_connections(read_settings(), {})["cdp_mongo"]["schema"]


def use_database(name: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """Point `environ`'s cdp_mongo connection at database `name` (it must already be set: scripts/env.sh);
    refuses the dev stack's database. Returns the new value."""
    if name == dev_database():
        raise ValueError(f"{name!r} is the dev stack's CDP database")
    value = with_database(environ[CONN_VAR], name)
    environ[CONN_VAR] = value
    return value
