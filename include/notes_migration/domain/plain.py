"""Plain values for JSON: UTC now, and Mongo documents with dates and ids as strings (pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def plain_value(v: Any) -> Any:
    """One value as JSON wants it: datetimes as ISO-8601 UTC (`…Z`), ObjectIds as strings, containers walked."""
    if isinstance(v, dt.datetime):
        return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).isoformat().replace("+00:00", "Z")
    if isinstance(v, Mapping):
        return {k: plain_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain_value(x) for x in v]
    if type(v).__name__ == "ObjectId":
        return str(v)
    return v


def as_plain(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A Mongo document with dates as ISO strings and ids as strings, ready for JSON."""
    return None if doc is None else plain_value(dict(doc))
