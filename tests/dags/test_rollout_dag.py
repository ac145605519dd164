"""DAG integrity of crm_notes_rollout and crm_notes_weekly_report: parse, params from the contract, wiring only."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
U = "0b7d3c1e-5a4f-4e8b-9c2d-6e7f8a9b0c1d"


@pytest.fixture(scope="module")
def bag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag


def test_rollout_dag_params_come_from_the_contract(bag):
    from notes_migration.domain.contract import ROLLOUT_PARAMS

    dag = bag.get_dag("crm_notes_rollout")
    assert dag is not None and dag.schedule is None and dag.max_active_runs == 1
    assert set(dag.params.keys()) == {p.name for p in ROLLOUT_PARAMS}
    assert dag.params.get_param("max_concurrent").value == 4
    assert dag.params.get_param("halt_gate").value == 0.02
    assert dag.params.get_param("cids").schema["type"] == "array"


@pytest.mark.parametrize(
    "conf, ok",
    [
        ({"cids": [{"cid": 1, "company_sso_id": U}]}, True),
        ({"cids_variable": "rollout_wave_1"}, True),
        ({"cids": "7101"}, False),
        ({"max_concurrent": 0}, False),
        ({"halt_gate": 2}, False),
    ],
)
def test_rollout_params_are_validated(bag, conf, ok):
    from airflow.sdk.exceptions import ParamValidationError

    def check():
        params = copy.deepcopy(bag.get_dag("crm_notes_rollout").params)
        for key, value in conf.items():
            params[key] = value  # a Param checks its value when set
        return params.validate()

    if ok:
        check()
    else:
        with pytest.raises(ParamValidationError):
            check()


def test_rollout_flow(bag):
    dag = bag.get_dag("crm_notes_rollout")
    t = dag.task_dict
    assert set(t) == {"plan", "approval_requests", "approve_cid", "run_lane", "report"}
    assert "plan" in t["run_lane"].upstream_task_ids and "run_lane" in t["report"].upstream_task_ids
    assert t["report"].trigger_rule == "all_done" and t["report"].retries == 0
    assert t["run_lane"].retries >= 1
    # the lane waits deferred (no Task SDK internals), the request is the provider's ApprovalOperator
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    from notes_migration.tasks.rollout_operators import CidApprovalOperator, RolloutLaneOperator

    assert t["run_lane"].operator_class is RolloutLaneOperator
    assert t["approve_cid"].operator_class is CidApprovalOperator and issubclass(CidApprovalOperator, ApprovalOperator)
    assert t["approve_cid"].upstream_task_ids == {"approval_requests"}
    assert "approve_cid" not in t["report"].upstream_task_ids  # an open request never holds the report
    assert set(t["approve_cid"].params.keys()) >= {"window_start", "window_end", "reference"}
    assert dag.on_failure_callback and {type(n).__name__ for n in dag.on_failure_callback} == {
        "SlackWebhookNotifier",
        "PagerdutyNotifier",
    }
    assert {"crm-migration", "rollout"} <= set(dag.tags) and "halt_gate" in dag.doc_md
    for task in dag.tasks:
        assert task.owner == "data-platform"


def test_migration_dag_deadline_and_crm_pool(bag):
    from notes_migration.domain.contract import CRM_READERS_POOL

    dag = bag.get_dag("crm_notes_migration")
    (alert,) = dag.deadline
    assert alert.interval.total_seconds() == 4 * 3600
    for task_id in ("coverage_preflight", "migrate_page", "validate"):
        assert dag.task_dict[task_id].pool == CRM_READERS_POOL


def test_no_task_sdk_internals_in_the_rollout():
    for path in (ROOT / "include" / "notes_migration").rglob("*.py"):
        assert "airflow.sdk.execution_time" not in path.read_text(), path


def test_weekly_dag(bag):
    dag = bag.get_dag("crm_notes_weekly_report")
    assert dag.schedule == "@weekly" and dag.catchup is False
    assert set(dag.task_dict) == {"weekly_aggregate"} and dag.task_dict["weekly_aggregate"].retries >= 1


@pytest.mark.parametrize("name", ["crm_notes_rollout", "crm_notes_weekly_report"])
def test_parse_imports_nothing_heavy_and_only_wires(name):
    path = ROOT / "dags" / f"{name}.py"
    body = path.read_text().split('"""', 2)[-1]
    for forbidden in ("find(", "insert_one", "MongoClient", "Variable.get", "crm_migration_"):
        assert forbidden not in body, forbidden
    code = (
        "import sys,importlib.util as u;"
        f"s=u.spec_from_file_location('m', r'{path}');m=u.module_from_spec(s);s.loader.exec_module(m);"
        "print(','.join(x for x in ('pymongo','bson','notes_migration.ops.rollout','notes_migration.stores.job_store')"
        " if x in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'plugins'}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "", f"heavy modules imported at parse time: {out.stdout}"
