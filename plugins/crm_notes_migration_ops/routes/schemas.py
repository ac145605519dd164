"""The bodies and answers of the state-changing routes (routes/operate.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from notes_migration.domain import contract

TriggerBody: Any = contract.trigger_model()  # the run contract's parameters, bounds and defaults (contract.py)
TriggerBody.model_config["json_schema_extra"] = {
    "examples": [{"cid": 3001, "company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e"}]
}


class TriggerResponse(BaseModel):
    job_id: str = Field(description="the migration job id the run will record (deterministic per run and CID)")
    run_id: str
    dag_id: str
    cid: int
    company_sso_id: str
    state: str = Field(description="the DAG run's state (queued)")
    conf: dict[str, Any]
    dag_paused: bool | None = Field(description="true: the run waits until the DAG is unpaused")
    status_url: str
    airflow_run_url: str


class CancelResponse(BaseModel):
    job_id: str
    cid: int
    status: str = Field(description="halted")
    halted_reason: str = Field(description="CANCELLED")
    cancelled_by: str
    airflow_run: dict[str, Any] | None = Field(
        description="the DAG run: state before and after (failed); null when Airflow has no such run"
    )
    lock_released: bool
    status_url: str


class RetryBody(BaseModel):
    """Which failed notes to retry: every reason of the queue when reason_codes is absent."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason_codes: list[str] | None = Field(
        None, min_length=1, max_length=10, description='e.g. ["CONTACT_NOT_MAPPED"] after a contact backfill'
    )
