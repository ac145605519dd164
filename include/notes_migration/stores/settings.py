"""Reads of the Airflow Variables that steer a run (the feature flag and threshold overrides)."""

from __future__ import annotations

import logging

from notes_migration.domain.config import FLAG_VARIABLE, SETTINGS_VARIABLE, Thresholds, parse_flag

log = logging.getLogger(__name__)


def flag_cids() -> frozenset[int]:
    """CIDs with the flag ON. Missing, malformed or not a list: OFF for every CID."""
    from airflow.sdk import Variable

    try:
        value = Variable.get(FLAG_VARIABLE, default=None, deserialize_json=True)
    except ValueError:
        log.error("Variable %s is not valid JSON: the flag is OFF for every CID", FLAG_VARIABLE)
        return frozenset()
    return parse_flag(value)


def thresholds() -> Thresholds:
    from airflow.sdk import Variable

    return Thresholds.from_mapping(Variable.get(SETTINGS_VARIABLE, default={}, deserialize_json=True))
