"""
# crm_notes_migration

Moves the historical **Person notes** of one legacy CRM client account (a CID)
from the CRM PostgreSQL into CDP MongoDB `contact_notes`, once, idempotently,
and proves it by validation before calling the CID done.

**Trigger** one run per CID with a conf such as
`{"cid": 100, "company_sso_id": "<uuid>"}`. The feature flag Variable
`crm_notes_migration_enabled` (a JSON list of CIDs) must list the CID.

| param | meaning |
|---|---|
| `cid` | CRM organization id (required) |
| `company_sso_id` | CDP company UUID the CID moves into (required) |
| `batch_size` | notes per insert batch, 1–1000 (default 500) |
| `include_activities` | also migrate Calls/Emails/Meetings/WhatsApp/SMS entries (default off) |
| `dry_run` | read, transform and account, write no notes |
| `force_rerun` | run a CID that already completed (re-inserts nothing that exists) |

**Flow**: preconditions + per-CID lock → coverage preflight, beside it plan keyset pages →
per task page (a mapped task group): migrate its notes → relink its attachments (a CID of one
task page relinks inside its migrate task, and its relink task is skipped) → validate, which
branches: send_alerts when the verdict calls for any, then finalise; the lock is released by a
teardown whatever happens.

**Connections**: `crm_postgres`, `cdp_mongo`, `crm_s3`, `cdp_s3`, `slack_alerts`,
`pagerduty_events`. **Status**: `GET /crm-notes-migration/api/status?cid=…`.
**Owner**: data-platform migrations (Ops on-call for the CDP move).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task, task_group, teardown

from notes_migration.domain.contract import CRM_READERS_POOL, DAG_ID, PAGE_LANES
from notes_migration.tasks.attachment_relink import AttachmentRelinkOperator
from notes_migration.tasks.lazy import lazy_import
from notes_migration.tasks.notifiers import migration_deadline
from notes_migration.tasks.params import dag_params

tasks = lazy_import("notes_migration.tasks.migration_tasks")  # loaded when a task runs, not at parse time


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_tasks=PAGE_LANES,
    doc_md=__doc__,
    tags=["crm-migration", "cdp", "notes"],
    default_args={
        "owner": "data-platform",
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=30),
        "retry_exponential_backoff": True,
        # Depth first: a free slot goes to the step furthest along (a page's relink before the next
        # page's notes, a run's validation before another run's pages).
        "weight_rule": "upstream",
    },
    params=dag_params(),  # the run contract (notes_migration/domain/contract.py)
    deadline=migration_deadline(DAG_ID),  # past the PRD's 4-hour window per CID: Slack, the run goes on
)
def crm_notes_migration():
    @task(retries=0)
    def preconditions() -> dict:
        return tasks.preconditions()

    @task(pool=CRM_READERS_POOL)
    def coverage_preflight(job: dict) -> dict:
        return tasks.coverage_preflight(job)

    @task
    def plan_pages(job: dict) -> list[dict]:
        return tasks.plan_pages(job)

    @task(map_index_template="{{ page_label }}", max_active_tis_per_dagrun=PAGE_LANES, pool=CRM_READERS_POOL)
    def migrate_page(job: dict, page: dict) -> None:
        tasks.migrate_page(job, page, relink_task_id="relink_attachments")  # a whole-CID page: its files too

    @task_group(group_id="pages", prefix_group_id=False)
    def page_then_files(job: dict, page: dict) -> None:
        """Steps 4 and 5 for one task page: its files are relinked as soon as its notes are in, while
        the other pages are still migrating (relink on all_done: a failed page must not strand the
        files of the notes it did insert; it skips itself on a dry run or a halted job)."""
        migrated = migrate_page(job=job, page=page)
        relinked = AttachmentRelinkOperator(
            task_id="relink_attachments",
            page=page,
            trigger_rule="all_done",
            map_index_template="{{ page_label }}",
            max_active_tis_per_dagrun=PAGE_LANES,
        )
        migrated >> relinked

    @task.branch(trigger_rule="all_done", pool=CRM_READERS_POOL)
    def validate() -> list[str]:
        """Runs whatever the pages did; finds its job from the run (a setup's output feeds all_success tasks
        only). Keeps its verdict in XCom `verdict` and branches: send_alerts when the verdict calls for any
        (a success pages nobody: send_alerts is skipped), finalise always."""
        return tasks.validate_and_branch(alerts_task_id="send_alerts", finalise_task_id="finalise")

    @task
    def send_alerts(verdict: dict) -> list[str]:
        return tasks.send_alerts(verdict)

    @task(trigger_rule="none_failed_min_one_success", retries=0)
    def finalise(verdict: dict) -> dict:
        return tasks.finalise(verdict)

    @teardown(on_failure_fail_dagrun=True)  # a job never finalised (run marked failed, task dead) fails the run
    def release_lock(job: dict) -> bool:
        return tasks.release_lock(job)

    job = preconditions()
    coverage = coverage_preflight(job)
    pages = plan_pages(job)  # side by side with the coverage gate: it only reads the CRM and writes no note
    paged = page_then_files.partial(job=job).expand(page=pages)
    coverage >> paged
    judged = validate()
    [coverage, paged] >> judged
    verdict = judged["verdict"]
    alerted = send_alerts(verdict)
    done = finalise(verdict)
    alerted >> done
    done >> release_lock(job).as_teardown(setups=job)


crm_notes_migration()
