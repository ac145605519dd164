"""The run contract: the one definition of a migration run's parameters.

Names, types, defaults, bounds and descriptions live here once. The DAG's
`Param`s (`tasks.params.dag_params`), the plugin's trigger body (`trigger_model`), the CLI's
options (`add_cli_options`) and the effective `RunConfig` (`run_options`) are all
derived from `RUN_PARAMS`, so they cannot drift apart.

Light on purpose: importing it loads neither Airflow, pydantic nor a driver
(each builder imports what it needs when called).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DAG_ID = "crm_notes_migration"  # one run per CID; its params are RUN_PARAMS
CRM_READERS_POOL = "crm_readers"  # Airflow pool (airflow_settings.yaml) capping CRM-reading tasks across runs
PAGE_LANES = 4  # the DAG's max_active_tasks and its mapped tasks' per-run cap (config.TARGET_TASK_PAGES)

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
UUID_RE = re.compile(UUID_PATTERN)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_JSON_TYPES = {int: "integer", str: "string", bool: "boolean", float: "number", list: "array"}


@dataclass(frozen=True)
class RunParam:
    """One parameter of a run, as every surface (DAG, API, CLI) sees it."""

    name: str
    type: type
    description: str
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": _JSON_TYPES[self.type]}
        for key in ("minimum", "maximum", "pattern"):
            if getattr(self, key) is not None:
                schema[key] = getattr(self, key)
        return schema

    def check(self, value: Any) -> Any:
        """The value if it satisfies the parameter, else ValueError naming the rule it breaks."""
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{self.name} must be an integer, got {value!r}")
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # JSON has one number type: 1 is a valid number
        if not isinstance(value, self.type):
            raise ValueError(f"{self.name} must be {_JSON_TYPES[self.type]}, got {value!r}")
        value = _as_any(value)
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.name} must be ≥ {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.name} must be ≤ {self.maximum}, got {value}")
        if self.pattern is not None and not re.match(self.pattern, value):
            raise ValueError(f"{self.name} {value!r} does not match {self.pattern}")
        return value


RUN_PARAMS: tuple[RunParam, ...] = (
    RunParam("cid", int, "CRM organization id (CID)", minimum=1),
    RunParam("company_sso_id", str, "CDP company UUID the CID moves into", pattern=UUID_PATTERN),
    RunParam("batch_size", int, "notes per insert batch", default=500, minimum=1, maximum=1000),
    RunParam("include_activities", bool, "also migrate Calls/Emails/Meetings/WhatsApp/SMS entries (OQ-4)", False),
    RunParam("dry_run", bool, "read, transform and account; write no notes and copy no file", False),
    RunParam("force_rerun", bool, "run a CID that already completed_success (inserts only what is missing)", False),
)


STAGE_PATTERN = r"^(qa|pilot|batch)$"  # codes.Stage
ROLLOUT_DAG_ID = "crm_notes_rollout"  # one run per rollout of many CIDs; its params are ROLLOUT_PARAMS

# The rollout's parameters (notes_migration/rollout.py checks the list's entries and reads the Variable).
ROLLOUT_PARAMS: tuple[RunParam, ...] = (
    RunParam("cids", list, "JSON list of {cid, company_sso_id}, launched in this order", default=[]),
    RunParam("cids_variable", str, "name of an Airflow Variable holding that list (when cids is empty)", ""),
    RunParam("max_concurrent", int, "at most this many crm_notes_migration runs at once", 4, minimum=1, maximum=32),
    RunParam("halt_gate", float, "Stage-3 gate: stop launching when halted / finished CIDs exceeds it", 0.02, 0, 1),
    RunParam("batch_size", int, "batch_size of every migration run", default=500, minimum=1, maximum=1000),
    RunParam(
        "poke_interval", int, "seconds between two looks (the triggerer's) at a run or at open approvals", 10, 1, 300
    ),
    RunParam("stage", str, "qa (no approval), pilot or batch (one CSM approval per CID)", "qa", pattern=STAGE_PATTERN),
    RunParam(
        "approval_timeout_s", int, "an approval request unanswered this long ends APPROVAL_EXPIRED", 259200, 1, 2592000
    ),
)


def _as_any(value: Any) -> Any:
    return value


def param(name: str, spec: Iterable[RunParam] = RUN_PARAMS) -> RunParam:
    return next(p for p in spec if p.name == name)


def defaults(spec: Iterable[RunParam] = RUN_PARAMS) -> dict[str, Any]:
    """The optional parameters' defaults (what a conf without them means)."""
    return {p.name: p.default for p in spec if not p.required}


def run_options(values: Mapping[str, Any], spec: Iterable[RunParam] = RUN_PARAMS) -> dict[str, Any]:
    """A complete, checked set of run options from a conf/params mapping (unknown keys refused)."""
    spec = tuple(spec)
    unknown = set(values) - {p.name for p in spec}
    if unknown:
        raise ValueError(f"unknown run parameters: {sorted(unknown)}")
    out = {}
    for p in spec:
        if p.name not in values or values[p.name] is None:
            if p.required:
                raise ValueError(f"{p.name} is required")
            out[p.name] = p.default
        else:
            out[p.name] = p.check(values[p.name])
    return out


def trigger_model(spec: Iterable[RunParam] = RUN_PARAMS, name: str = "TriggerBody") -> Any:
    """The trigger endpoint's request body: a strict pydantic model with the same fields and bounds."""
    from pydantic import ConfigDict, Field, create_model

    fields: dict[str, Any] = {}
    for p in spec:
        bounds = {k: v for k, v in (("ge", p.minimum), ("le", p.maximum), ("pattern", p.pattern)) if v is not None}
        default = ... if p.required else p.default
        kwargs: dict[str, Any] = {"description": p.description, **bounds}
        fields[p.name] = (p.type, Field(default, **kwargs))
    config = ConfigDict(extra="forbid", strict=True)
    return create_model(name, __config__=config, __doc__="The run parameters of one CID's migration.", **fields)


def add_cli_options(parser: argparse.ArgumentParser, spec: Iterable[RunParam] = RUN_PARAMS) -> None:
    """`--cid`, `--company-sso-id`, `--batch-size`, `--dry-run`, …: one option per run parameter."""
    for p in spec:
        flag = "--" + p.name.replace("_", "-")
        if p.type is bool:
            parser.add_argument(flag, action="store_true", default=p.default, help=p.description)
            continue
        bounds = f" ({p.minimum}–{p.maximum})" if p.minimum is not None and p.maximum is not None else ""
        parser.add_argument(
            flag,
            type=_cli_type(p),
            required=p.required,
            default=None if p.required else p.default,
            help=f"{p.description}{bounds}" + ("" if p.required else f"; default {p.default}"),
        )


def _cli_type(p: RunParam) -> Any:
    def convert(text: str) -> Any:
        try:
            return p.check(p.type(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = p.type.__name__
    return convert
