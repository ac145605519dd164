"""One definition of the run parameters: the DAG's Params, the trigger body and the CLI derive from it."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from crm_notes_migration_ops import cli
from notes_migration.domain import contract
from notes_migration.domain.config import RunConfig, Thresholds
from notes_migration.tasks.params import dag_params

COMPANY = "0b7d3c1e-5a4f-4e8b-9c2d-6e7f8a9b0c1d"


def changed_spec(name: str, **changes) -> tuple[contract.RunParam, ...]:
    return tuple(dataclasses.replace(p, **changes) if p.name == name else p for p in contract.RUN_PARAMS)


def test_the_three_surfaces_carry_the_same_names_defaults_and_bounds():
    params = dag_params()
    body = contract.trigger_model().model_json_schema()["properties"]
    run = cli.parser().parse_args(["run", "--cid", "5", "--company-sso-id", COMPANY])
    for p in contract.RUN_PARAMS:
        assert p.name in params and p.name in body and hasattr(run, p.name)
        if not p.required:
            assert params[p.name].value == p.default == body[p.name]["default"] == getattr(run, p.name)
    assert params["batch_size"].schema["maximum"] == body["batch_size"]["maximum"] == 1000


def test_changing_a_bound_in_the_contract_changes_the_dag_param_the_trigger_and_the_cli():
    spec = changed_spec("batch_size", maximum=250, default=100)
    # DAG param: Airflow's JSON-schema validation
    param = dag_params(spec)["batch_size"]
    assert param.value == 100
    with pytest.raises(Exception, match="250"):
        param.resolve(300)
    # trigger endpoint body
    body = contract.trigger_model(spec)
    assert body(cid=1, company_sso_id=COMPANY).batch_size == 100
    with pytest.raises(ValidationError):
        body(cid=1, company_sso_id=COMPANY, batch_size=300)
    # CLI
    args = cli.parser(spec).parse_args(["run", "--cid", "1", "--company-sso-id", COMPANY])
    assert args.batch_size == 100
    with pytest.raises(SystemExit):
        cli.parser(spec).parse_args(["run", "--cid", "1", "--company-sso-id", COMPANY, "--batch-size", "300"])
    # and the effective run options
    with pytest.raises(ValueError, match="≤ 250"):
        contract.run_options({"cid": 1, "company_sso_id": COMPANY, "batch_size": 300}, spec)


def test_run_options_refuse_unknown_missing_and_mistyped_values():
    with pytest.raises(ValueError, match="unknown"):
        contract.run_options({"cid": 1, "company_sso_id": COMPANY, "batchsize": 5})
    with pytest.raises(ValueError, match="company_sso_id is required"):
        contract.run_options({"cid": 1})
    with pytest.raises(ValueError, match="integer"):
        contract.run_options({"cid": True, "company_sso_id": COMPANY})
    with pytest.raises(ValueError, match="does not match"):
        contract.run_options({"cid": 1, "company_sso_id": "not-a-uuid"})


def test_run_config_defaults_come_from_the_contract():
    cfg = RunConfig.from_params({"cid": 3, "company_sso_id": COMPANY}, Thresholds())
    assert (cfg.batch_size, cfg.dry_run) == (contract.param("batch_size").default, contract.param("dry_run").default)
    assert RunConfig(cid=3, company_sso_id=COMPANY) == cfg


def test_a_snapshot_from_another_version_still_reads():
    from notes_migration.domain.config import RunConfig

    stored = RunConfig(cid=7, company_sso_id="0b7d3c1e-5a4f-4e8b-9c2d-6e7f8a9b0c1d").as_dict()
    stored["thresholds"]["a_later_setting"] = "x"
    stored["a_later_param"] = 1
    assert RunConfig.from_dict(stored) == RunConfig(cid=7, company_sso_id="0b7d3c1e-5a4f-4e8b-9c2d-6e7f8a9b0c1d")
