"""Time as the database stores it."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """UTC, naive: the database's convention (SQLite has no time zones)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
