"""Plain values for JSON: UTC now, and Mongo documents with dates and ids as strings (pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_plain(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A Mongo document with dates as ISO strings and ids as strings, ready for JSON."""
    if doc is None:
        return None

    def conv(v: Any) -> Any:
        if isinstance(v, dt.datetime):
            return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).isoformat().replace("+00:00", "Z")
        if isinstance(v, Mapping):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        if type(v).__name__ == "ObjectId":
            return str(v)
        return v

    return conv(dict(doc))
