"""DAG integrity of crm_notes_housekeeping: parses, daily, wiring only, nothing heavy at parse time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "dags" / "crm_notes_housekeeping.py"


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.get_dag("crm_notes_housekeeping")


def test_daily_with_owner_retries_tags_and_doc(dag):
    assert dag is not None
    assert dag.schedule == "@daily" and "0 0 * * *" in repr(dag.timetable)
    assert dag.catchup is False and dag.max_active_runs == 1
    assert {"crm-migration", "housekeeping"} <= set(dag.tags)
    assert dag.doc_md and "crm_migration_audit" in dag.doc_md and "never" in dag.doc_md.lower()
    assert set(dag.task_dict) == {"purge_expired", "release_dead_locks"}
    for t in dag.tasks:
        assert t.owner == "data-platform" and t.retries >= 1


def test_dag_file_only_wires():
    source = DAG_FILE.read_text()
    for forbidden in ("delete_many", "MongoClient", "MongoHook", "Variable.get", "crm_migration_"):
        assert forbidden not in source.split('"""', 2)[-1], forbidden


def test_parse_imports_nothing_heavy():
    code = (
        "import sys,importlib.util as u;"
        f"s=u.spec_from_file_location('hk', r'{DAG_FILE}');m=u.module_from_spec(s);s.loader.exec_module(m);"
        "print(','.join(x for x in ('pymongo','bson','notes_migration.stores.job_store') if x in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'plugins'}"},
    ).stdout.strip()
    assert out == "", f"heavy modules imported at parse time: {out}"
