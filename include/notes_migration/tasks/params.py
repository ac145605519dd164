"""The run contract as Airflow DAG `Param`s: the Airflow edge of `domain.contract` (the trigger body and the CLI
options are derived there too, without Airflow)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airflow.sdk import Param

from notes_migration.domain.contract import RUN_PARAMS, RunParam


def dag_params(spec: Iterable[RunParam] = RUN_PARAMS) -> dict[str, Any]:
    """The DAG's `params`: one Airflow `Param` per run parameter (JSON-schema validated by Airflow)."""
    out = {}
    for p in spec:
        args = () if p.required else (p.default,)
        kwargs: dict[str, Any] = {"description": p.description, **p.json_schema()}
        out[p.name] = Param(*args, **kwargs)
    return out
