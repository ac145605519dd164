"""
# crm_notes_rollout

Rolls the CRM notes migration out to many CIDs (PRD Stage 2/3): one run of
`crm_notes_migration` per CID, at most `max_concurrent` at once, each CID approved by its CSM in
stages pilot and batch, stopping at the stage gate.

**Trigger** with a conf such as
`{"cids": [{"cid": 3001, "company_sso_id": "<uuid>"}, …], "max_concurrent": 4}`
(or `{"cids_variable": "<name of a Variable holding that list>"}`).

| param | meaning |
|---|---|
| `cids` | JSON list of `{cid, company_sso_id}`, launched in this order |
| `cids_variable` | name of an Airflow Variable holding that list (used when `cids` is empty) |
| `max_concurrent` | at most this many migration runs at once (default 4): one lane each; a lane waits deferred (no executor slot) |
| `halt_gate` | batch/qa: stop launching when halted / finished CIDs of this rollout exceeds it (default 0.02) |
| `batch_size` | `batch_size` of every migration run (default 500) |
| `poke_interval` | seconds between two looks (in the triggerer) at a running migration run or at open approvals (default 10) |
| `stage` | `qa` (default: no approval), `pilot` (stops at the first pipeline-bug halt) or `batch` (halt-rate gate) |
| `approval_timeout_s` | pilot/batch: a CSM approval request unanswered this long ends APPROVAL_EXPIRED (default 3 days) |

**Flow**: plan (CIDs already `completed_success` are skipped; CIDs whose flag is off are reported, never
triggered) → in stage pilot/batch one human-in-the-loop request per CID (`approve_cid`: Approve / Reject with
`window_start`, `window_end`, `reference`; answered in Required Actions or through the REST API) → beside them
`max_concurrent` lanes, each launching the next approved CID inside its window, in list order, after checking
the stage gate, and waiting deferred for its run → report (per CID: approval, final state or outcome, match_pct,
failure rate, attachment success, duration; totals, halt rate, the gate that stopped it), kept in
`crm_migration_rollouts`. The report task fails when a gate stopped the rollout; the DAG notifies Slack and
PagerDuty on failure. **Watch**: `GET /crm-notes-migration/api/rollouts/{rollout_id}`.
**Connections**: `cdp_mongo`, `crm_postgres` (the preflight), `slack_alerts`, `pagerduty_events`. **Owner**: data-platform migrations.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from notes_migration.domain.contract import ROLLOUT_DAG_ID, ROLLOUT_PARAMS
from notes_migration.tasks.lazy import lazy_import
from notes_migration.tasks.notifiers import failure_notifiers
from notes_migration.tasks.params import dag_params
from notes_migration.tasks.rollout_operators import APPROVAL_FORM, CidApprovalOperator, RolloutLaneOperator

rollout_tasks = lazy_import("notes_migration.tasks.rollout_tasks")  # loaded when a task runs, not at parse time


@dag(
    dag_id=ROLLOUT_DAG_ID,
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["crm-migration", "cdp", "rollout"],
    default_args={
        "owner": "data-platform",
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=30),
    },
    params=dag_params(ROLLOUT_PARAMS),  # the rollout's contract (notes_migration/domain/contract.py)
    on_failure_callback=failure_notifiers(ROLLOUT_DAG_ID),  # Slack + PagerDuty through the providers' notifiers
)
def crm_notes_rollout():
    @task
    def plan() -> list[dict]:
        """One descriptor per lane: {rollout_id, lane} (no lane when nothing is to be launched)."""
        return rollout_tasks.plan()

    @task
    def approval_requests() -> list[dict]:
        """One request per CID to launch in stage pilot/batch ({rollout_id, cid, company_sso_id}); none in qa."""
        return rollout_tasks.approval_requests()

    planned = plan()
    asks = approval_requests()
    planned >> asks
    CidApprovalOperator.partial(
        task_id="approve_cid",
        params=APPROVAL_FORM,  # the request's form: window_start, window_end (UTC ISO-8601), reference
        map_index_template="CID {{ task.request.cid }}",
        retries=0,  # a failed request is not asked twice: its lane ends it APPROVAL_EXPIRED after the timeout
    ).expand(request=asks)
    lanes = RolloutLaneOperator.partial(task_id="run_lane", map_index_template="lane {{ task.lane.lane }}").expand(
        lane=planned
    )

    @task(trigger_rule="all_done", retries=0)
    def report() -> dict:
        """Runs whatever the lanes did; finds its rollout from the run."""
        return rollout_tasks.report()

    lanes >> report()  # not after the approvals: a request left open after a gate stop must not hold the report


crm_notes_rollout()
