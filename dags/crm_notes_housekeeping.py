"""
# crm_notes_housekeeping

Daily retention of the CRM notes migration's bookkeeping in the CDP database
(PRD §7.1), on servers with or without TTL indexes:

* failed-record queue `crm_migration_note_log`: purged after 30 days
  (`failed_record_retention_days`);
* job records, pages, attachment pages, person maps and events: purged one year
  (`job_retention_days`) after the job's last update, except each CID's latest
  real job (it decides the CID's status and the ALREADY_MIGRATED refusal);
* audit map `crm_migration_audit`: **never** purged;
* locks of `crm_notes_migration` runs that Airflow reports `failed` or
  `success` are released (asked through the Task SDK; the lease decides when
  Airflow does not know the run).

Idempotent; each task logs and returns what it removed. Thresholds come from
the Variable `crm_notes_migration_settings` like the migration's.
**Connections**: `cdp_mongo`. **Owner**: data-platform migrations.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from notes_migration.tasks.lazy import lazy_import
from notes_migration.tasks.notifiers import failure_notifiers

housekeeping = lazy_import("notes_migration.ops.housekeeping")  # loaded when a task runs, not at parse time


@dag(
    dag_id="crm_notes_housekeeping",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["crm-migration", "cdp", "housekeeping"],
    default_args={
        "owner": "data-platform",
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=5),
    },
    on_failure_callback=failure_notifiers("crm_notes_housekeeping"),  # Slack + PagerDuty (providers' notifiers)
)
def crm_notes_housekeeping():
    @task
    def purge_expired() -> dict:
        return housekeeping.purge_task()

    @task
    def release_dead_locks() -> dict:
        return housekeeping.release_locks_task()

    purge_expired()
    release_dead_locks()


crm_notes_housekeeping()
