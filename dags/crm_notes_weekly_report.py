"""
# crm_notes_weekly_report

The weekly aggregate of the CRM notes migration (PRD §12 cadence): over the 7
days before the run's data interval end, the CIDs completed, completed with
errors and halted, the mean match_pct, the mean attachment success and the halt
rate, from the real (not dry) job records. One document per ISO week in
`crm_migration_weekly` (recomputed whole on a re-run); shown by
`GET /crm-notes-migration/api/weekly` and the Ops page.
**Connections**: `cdp_mongo`. **Owner**: data-platform migrations.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from notes_migration.tasks.lazy import lazy_import

rollout_tasks = lazy_import("notes_migration.tasks.rollout_tasks")  # loaded when a task runs, not at parse time


@dag(
    dag_id="crm_notes_weekly_report",
    schedule="@weekly",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["crm-migration", "cdp", "report"],
    default_args={"owner": "data-platform", "retries": 2, "retry_delay": dt.timedelta(minutes=5)},
)
def crm_notes_weekly_report():
    @task
    def weekly_aggregate() -> dict:
        return rollout_tasks.weekly()

    weekly_aggregate()


crm_notes_weekly_report()
