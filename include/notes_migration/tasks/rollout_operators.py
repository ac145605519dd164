"""The rollout's two operators: a lane that waits deferred, and one CSM approval request per CID.

`RolloutLaneOperator` earns a class because it waits in the triggerer, never on a worker: it launches a CID's
`crm_notes_migration` run the way the standard provider's TriggerDagRunOperator does (raising the Task SDK's
public `DagRunTriggerException` with `wait_for_completion` and `deferrable`: the run is created and the lane
defers on `DagStateTrigger` until it ends), re-attaches a retried lane to its in-flight run (`DagStateTrigger`
directly, no second trigger), and sleeps on `DateTimeTrigger` while approvals or windows are awaited. A
deferred lane holds no executor slot and no Celery worker process, so any number of lanes fit any executor.

`CidApprovalOperator` is the standard provider's `ApprovalOperator` (options Approve / Reject; on Airflow 3.3
the task waits in `awaiting_input`, no slot, no trigger) with the form fields `window_start`, `window_end`
(UTC ISO-8601) and `reference`; it builds its request from the CID's preflight figures at run time and records
the answer, or the timeout, on the CID's approval record instead of failing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator, Param

from notes_migration.domain.config import DAG_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

RUN_DONE_STATES = ["success", "failed"]


def _rollout_tasks() -> Any:
    from notes_migration.tasks import rollout_tasks

    return rollout_tasks


class RolloutLaneOperator(BaseOperator):
    """One lane of a rollout: launches CIDs one after another and waits for each run deferred.

    :param lane: the lane descriptor of `plan` ({rollout_id, lane})
    """

    template_fields: Sequence[str] = ("lane",)
    ui_color = "#eef3fb"

    def __init__(self, *, lane: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lane = lane

    def execute(self, context: Context) -> dict[str, Any]:
        return self._next(context)

    def resume(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Back from a DateTimeTrigger (an approval or a window awaited): look again."""
        return self._next(context)

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Back from DagStateTrigger: the CID's run ended. Record it, then go on with the next CID."""
        _, data = event if isinstance(event, list | tuple) else (None, event)
        for run_id in data["run_ids"]:
            _rollout_tasks().record_run_end(self.lane["rollout_id"], run_id, str(data.get(run_id)))
        return self._next(context)

    def _next(self, context: Context) -> dict[str, Any]:
        tasks = _rollout_tasks()
        ti = context["ti"]

        def run_exists(run_id: str) -> bool:
            return bool(ti.get_dr_count(dag_id=DAG_ID, run_ids=[run_id]))

        step = tasks.lane_step(self.lane, run_exists)
        if step["kind"] == "attach":
            from airflow.providers.standard.triggers.external_task import DagStateTrigger

            self.defer(
                trigger=DagStateTrigger(
                    dag_id=DAG_ID,
                    states=RUN_DONE_STATES,  # type: ignore[arg-type]
                    run_ids=[step["run_id"]],
                    poll_interval=step["poke_interval"],
                ),
                method_name="execute_complete",
            )
        if step["kind"] == "launch":
            from airflow.sdk.exceptions import DagRunTriggerException

            # what TriggerDagRunOperator raises: the task runner creates the run and defers this task on
            # DagStateTrigger until the run is success or failed, then calls execute_complete
            raise DagRunTriggerException(
                trigger_dag_id=DAG_ID,
                dag_run_id=step["run_id"],
                conf=step["conf"],
                logical_date=None,
                run_after=dt.datetime.now(dt.UTC),
                reset_dag_run=False,
                skip_when_already_exists=False,
                wait_for_completion=True,
                allowed_states=["success"],
                failed_states=["failed"],
                poke_interval=step["poke_interval"],
                deferrable=True,
            )
        if step["kind"] == "wait":
            from airflow.providers.standard.triggers.temporal import DateTimeTrigger

            self.defer(trigger=DateTimeTrigger(moment=step["until"]), method_name="resume")
        return {**tasks.lane_summary(self.lane), "ended": step["kind"], "gate": step.get("gate")}


APPROVAL_FORM = {
    "window_start": Param(
        None, type=["null", "string"], description="start of the maintenance window, UTC ISO-8601 (…Z)"
    ),
    "window_end": Param(None, type=["null", "string"], description="end of the maintenance window, UTC ISO-8601 (…Z)"),
    "reference": Param(None, type=["null", "string"], description="the CSM ticket approving this CID"),
}


class CidApprovalOperator(ApprovalOperator):
    """The CSM approval request of one CID (stage pilot/batch): Approve / Reject, the window and the ticket.

    :param request: {rollout_id, cid, company_sso_id} from `plan`
    """

    template_fields: Sequence[str] = ("subject", "body", "request")

    def __init__(self, *, request: dict[str, Any], **kwargs: Any) -> None:
        kwargs.setdefault("subject", "CRM notes migration: CID approval")
        super().__init__(**kwargs)
        self.request = request

    def execute(self, context: Context) -> Any:
        tasks = _rollout_tasks()
        params = tasks._params(context)
        self.response_timeout = dt.timedelta(seconds=params["approval_timeout_s"])
        try:
            link: str | None = self.generate_link_to_ui(task_instance=context["ti"])
        except ValueError:  # no [api] base_url configured
            link = None
        shown = tasks.approval_request(
            self.request, timeout_s=params["approval_timeout_s"], stage=params["stage"], link=link
        )
        self.subject, self.body = shown["subject"], shown["body"]
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Record the answer (or the timeout: APPROVAL_EXPIRED) on the approval record; never fail on either."""
        if "error" not in event:
            self.validate_chosen_options(event["chosen_options"])
        return _rollout_tasks().record_approval(self.request, event)
