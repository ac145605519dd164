"""AttachmentRelinkOperator: design step 5, mapped over the same page descriptors as migrate_page (in
the DAG both are one mapped task group: a page's relink follows that page's notes).

A classic operator because it earns one: it owns two cached S3 hooks (CRM assets
bucket → CDP files bucket) shared by the page's worker threads. Everything else is
`relink.relink_page`. Nothing heavy is imported at module level, so the DAG
file stays cheap to parse.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from notes_migration.domain.config import CDP_S3_CONN_ID, CRM_S3_CONN_ID

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk import Context


class AttachmentRelinkOperator(BaseOperator):
    """Copy one page's note files from the CRM bucket to `{company_sso_id}/…` in CDP storage and set
    the notes' `attachments` (proxy URLs). Skips itself on a dry run or a halted job.

    :param job: the job descriptor ({job_id, cid, company_sso_id, run_id}); by default the job this DAG run
        recorded: the operator runs on `all_done` (a failed page must not strand the files of the notes
        it did insert), and
        Airflow wants a setup task (preconditions) followed by `all_success` tasks only
    :param page: one page descriptor of `plan_pages` ({page_no, lo_id, hi_id, size})
    :param source_conn_id: S3 connection of the CRM assets bucket (bucket in its extras)
    :param target_conn_id: S3 connection of CDP's files bucket (bucket in its extras)
    """

    template_fields: Sequence[str] = ("job", "page", "source_conn_id", "target_conn_id")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        page: dict[str, int],
        job: dict[str, Any] | None = None,
        source_conn_id: str = CRM_S3_CONN_ID,
        target_conn_id: str = CDP_S3_CONN_ID,
        concurrency: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.page = page
        self.source_conn_id = source_conn_id
        self.target_conn_id = target_conn_id
        self.concurrency = concurrency

    @cached_property
    def source_hook(self) -> S3Hook:
        from notes_migration.stores.s3_store import make_hook

        return make_hook(self.source_conn_id, self.concurrency or 8)

    @cached_property
    def target_hook(self) -> S3Hook:
        from notes_migration.stores.s3_store import make_hook

        return make_hook(self.target_conn_id, self.concurrency or 8)

    def execute(self, context: Context) -> dict[str, Any]:
        from notes_migration.stores.s3_store import bucket_from_hook
        from notes_migration.tasks.migration_tasks import job_of_this_run, relink_task

        return relink_task(
            context,
            self.job or job_of_this_run(context),
            self.page,
            source=lambda: bucket_from_hook(self.source_hook),  # built only for a page with files
            target=lambda: bucket_from_hook(self.target_hook),
            concurrency=self.concurrency,
        )
