"""Time as the database stores it."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """UTC, naive: the database's convention (SQLite has no time zones)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# OpenRouter's credit-limit resets: at midnight UTC; weeks start on Monday.
LIMIT_RESETS = ("daily", "weekly", "monthly")


def period_start(reset: str, now: dt.datetime) -> dt.datetime:
    """The start of the current daily, weekly or monthly period (naive UTC, like ``now``)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if reset == "daily":
        return day
    if reset == "weekly":
        return day - dt.timedelta(days=day.weekday())
    if reset == "monthly":
        return day.replace(day=1)
    raise ValueError(f"limit_reset is one of {', '.join(LIMIT_RESETS)}, not {reset!r}")
