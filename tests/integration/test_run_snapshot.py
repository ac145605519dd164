"""After preconditions, a run's thresholds come from the job's stored snapshot only: the verdict and
the alert plan cannot disagree, whatever happens to the settings Variable during the run.

CIDs used here: 1120–1121.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from devtools.seed import SeedSpec, company_for
from notes_migration.domain.config import RunConfig, Thresholds
from notes_migration.run import batch, coverage, plan, start
from notes_migration.stores import job_store, settings
from notes_migration.tasks import migration_tasks as tasks
from tests.cids import cids
from tests.helpers import assert_conserved

pytestmark = pytest.mark.integration
CID = cids(__name__)[0]


def test_changing_the_settings_variable_between_validate_and_the_branch_changes_no_alert(
    crm, cdp, seed_cid, monkeypatch
):
    seed_cid(SeedSpec(cid=CID, notes=30))
    run_id = "manual__snapshot"
    cfg = RunConfig(cid=CID, company_sso_id=company_for(CID), thresholds=Thresholds())
    job = start.start_job(crm, cdp, cfg, run_id=run_id, triggered_by="test", flag_cids=[CID])
    try:
        coverage.run_coverage(crm, cdp, job["job_id"])
        for page in plan.plan(crm, cdp, job["job_id"]):
            batch.migrate_page(crm, cdp, job["job_id"], page)
        assert_conserved(crm, cdp, CID, job["job_id"])
        context = {"dag_run": SimpleNamespace(run_id=run_id), "params": {"cid": CID}}
        monkeypatch.setattr(tasks, "get_current_context", lambda: context)
        verdict = tasks.validate()
        assert verdict["state"] == "completed_success" and verdict["alerts"] == []

        # Ops tighten the gate mid-run: with these settings the same verdict would page P2.
        monkeypatch.setenv("AIRFLOW_VAR_CRM_NOTES_MIGRATION_SETTINGS", json.dumps({"validation_match_pct": 100.5}))
        assert settings.thresholds().validation_match_pct == 100.5

        assert tasks.alerts_planned(verdict) is False  # the branch reads the verdict's plan
        assert tasks._snapshot_thresholds(verdict["job"]) == cfg.thresholds  # send_alerts reads the snapshot
        assert tasks.send_alerts(verdict) == []
        assert RunConfig.from_dict(job_store.get_job(cdp, job["job_id"])["config"]).thresholds == cfg.thresholds
    finally:
        start.release(cdp, CID, run_id)
