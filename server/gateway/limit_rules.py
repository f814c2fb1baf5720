"""One rule per key limit (the limits themselves are one value, ``key_limits.KeyLimits``).

Each rule says, for the one limit it owns, how a request is checked against it (from the key's
:class:`Counts`, read once in the locked transaction), what is counted when a request is admitted
and when usage records are written (settle), and what ``/api/v1/key`` reports of it. Adding a
limit is a field on ``KeyLimits``, a nullable column of the same name on the ``api_keys``
table (``db.py``; an existing database gains it on start), and a rule in :data:`RULES`
(``docs/ARCHITECTURE.md`` walks through one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import delete, insert, update
from sqlalchemy.orm import Session

from server.errors import APIError
from server.gateway.db import purge
from server.gateway.tables import ApiKey, CreditHold, RateEvent

WINDOW_S = 60.0  # the per-minute limits' sliding window


@dataclass(frozen=True)
class Counts:
    """A key's usage as the rules read it, in one transaction that holds the key's row."""

    committed: float  # USD spent plus what running generations hold
    requests: int  # admitted in the window
    tokens: int  # of generations recorded in the window
    oldest_request: float | None  # unix times of the oldest of each in the window
    oldest_tokens: float | None


class LimitRule(Protocol):
    field: str  # the KeyLimits field (and api_keys column) this rule enforces
    # How far back its counts reach, in seconds: rate events younger than the longest rule's
    # window are kept (``Limits.settle`` purges the rest); 0 for a rule that counts no events.
    window_s: float

    def check(self, limit: Any, counts: Counts, now: float) -> dict[str, str]:
        """Raise APIError (402/429) if a request may not start; else its response headers."""
        ...

    def admitted(self, s: Session, key_id: int, now: float) -> None:
        """Count an admitted request (called only when the limit is set)."""
        ...

    def settle(self, s: Session, keyed: list[dict[str, Any]], now: float) -> None:
        """Count written usage records of keyed generations (every key: limits may change)."""
        ...

    def report(self, limit: Any, usage: float) -> dict[str, Any]:
        """This limit's fields on /api/v1/key (``usage``: USD spent in all)."""
        ...


def retry_after(reset: float, now: float) -> int:
    return max(1, math.ceil(reset - now))


class CreditRule:
    """USD in all. Spent is kept on the key's row; a running generation holds the most it can cost
    (``Limits.hold_credit``) until its record replaces the hold with what it really cost."""

    field = "credit_limit"
    window_s = 0.0  # spend is kept on the key's row, not in rate events

    def check(self, limit: float, counts: Counts, now: float) -> dict[str, str]:
        if counts.committed >= limit:
            raise APIError(402, f"Credit limit of ${limit:g} reached for this key", reason="credit")
        return {}

    def admitted(self, s: Session, key_id: int, now: float) -> None:
        pass  # the hold is taken when the generation opens, once its largest cost is known

    def settle(self, s: Session, keyed: list[dict[str, Any]], now: float) -> None:
        s.execute(delete(CreditHold).where(CreditHold.gen_id.in_([r["id"] for r in keyed])))
        spent: dict[int, float] = {}
        for r in keyed:
            spent[r["key_id"]] = spent.get(r["key_id"], 0.0) + r["cost"]
        # In key order: two servers writing batches that share keys lock the rows in one order,
        # never each holding a key the other waits for (PostgreSQL would abort one as a deadlock).
        for key_id, cost in sorted(spent.items()):
            # NULL (a key from before the column) stays NULL: its first use sums the records.
            s.execute(update(ApiKey).where(ApiKey.id == key_id).values(spent=ApiKey.spent + cost))

    def report(self, limit: float | None, usage: float) -> dict[str, Any]:
        return {"limit": limit, "limit_remaining": None if limit is None else max(0.0, limit - usage)}


class RequestRateRule:
    """Requests per minute, counted as they are admitted."""

    field = "rpm"
    window_s = WINDOW_S

    def check(self, limit: int, counts: Counts, now: float) -> dict[str, str]:
        reset = (counts.oldest_request + WINDOW_S) if counts.oldest_request is not None else now + WINDOW_S
        remaining = limit - counts.requests
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, remaining - 1)),
            "X-RateLimit-Reset": str(int(reset * 1000)),
        }
        if remaining <= 0:
            headers["X-RateLimit-Remaining"] = "0"
            raise APIError(
                429,
                f"Rate limit exceeded: {limit} requests per minute",
                headers={**headers, "Retry-After": str(retry_after(reset, now))},
                reason="rate_requests",
            )
        return headers

    def admitted(self, s: Session, key_id: int, now: float) -> None:
        s.add(RateEvent(key_id=key_id, at=now, requests=1, tokens=0))

    def settle(self, s: Session, keyed: list[dict[str, Any]], now: float) -> None:
        pass

    def report(self, limit: int | None, usage: float) -> dict[str, Any]:
        note = f"{limit} requests per minute for this key" if limit is not None else "no request-rate limit on this key"
        return {"rate_limit": {"requests": limit if limit is not None else -1, "interval": "1m", "note": note}}


class TokenRateRule:
    """Tokens per minute, counted when a generation's usage record is written."""

    field = "tpm"
    window_s = WINDOW_S

    def check(self, limit: int, counts: Counts, now: float) -> dict[str, str]:
        if counts.tokens >= limit and counts.oldest_tokens is not None:
            reset = counts.oldest_tokens + WINDOW_S
            raise APIError(
                429,
                f"Rate limit exceeded: {limit} tokens per minute",
                headers={
                    "X-RateLimit-Limit": str(limit),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int(reset * 1000)),
                    "Retry-After": str(retry_after(reset, now)),
                },
                reason="rate_tokens",
            )
        return {}

    def admitted(self, s: Session, key_id: int, now: float) -> None:
        pass

    def settle(self, s: Session, keyed: list[dict[str, Any]], now: float) -> None:
        events = [
            {"key_id": r["key_id"], "at": now, "requests": 0, "tokens": r["prompt_tokens"] + r["completion_tokens"]}
            for r in keyed
        ]
        s.execute(insert(RateEvent), events)

    def report(self, limit: int | None, usage: float) -> dict[str, Any]:
        return {"rate_limit": {"tokens_per_minute": limit}}


# In the order a request is checked: a spent key hears 402 before it hears 429.
RULES: tuple[LimitRule, ...] = (CreditRule(), RequestRateRule(), TokenRateRule())


def purge_old_events(s: Session, rules: tuple[LimitRule, ...], now: float) -> None:
    """Delete rate events past every rule's window: they count for no key (a check skips them).
    Every server's usage writer does this after the rules' ``settle``, and only there, so no
    check holding a key's row waits on a purge."""
    purge(s, RateEvent.id, RateEvent.at < now - max((r.window_s for r in rules), default=0.0))
