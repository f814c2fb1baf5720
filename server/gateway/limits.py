"""How much each key may use, enforced by the rules in ``limit_rules.py`` (credit in USD, requests
and tokens per minute). Counted in the database (see ``db.Database.locked_key``), so the limits
are exact however many API processes, or nodes on one PostgreSQL database, serve the key.

Credit is held before a generation starts, as OpenRouter does: the most the request can cost
(its prompt plus ``max_tokens`` of output) must fit in what the key has left, and stays held until
the usage record settles it. Concurrent requests therefore can never spend past the limit.
Tokens per minute count from when a generation's usage record is written (milliseconds after it
ends)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from server.errors import APIError
from server.gateway.db import Database
from server.gateway.key_limits import KeyLimits
from server.gateway.keys import KeyInfo
from server.gateway.limit_rules import RULES, WINDOW_S, Counts, purge_old_events
from server.gateway.tables import CreditHold

# A hold outlives its request only if the process that made it died before writing the usage
# record; it then lapses this long after the request's own deadline.
_HOLD_GRACE_S = 600.0


class Limits:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    async def check(self, key: KeyInfo) -> dict[str, str]:
        """Count one request against the key; raise 402/429 when a limit is reached. Returns the
        rate-limit headers for the response."""
        if not key.limits.any():
            return {}
        return await asyncio.to_thread(self._check, key.id, key.limits, self._clock())

    def _check(self, key_id: int, limits: KeyLimits, now: float) -> dict[str, str]:
        with self.db.locked_key(key_id) as s:
            requests, tokens, oldest_request, oldest_tokens = self.db.recent(s, key_id, now - WINDOW_S)
            counts = Counts(self.db.committed(s, key_id, now), requests, tokens, oldest_request, oldest_tokens)
            headers: dict[str, str] = {}
            set_rules = [(rule, getattr(limits, rule.field)) for rule in RULES if getattr(limits, rule.field) is not None]
            for rule, limit in set_rules:
                headers.update(rule.check(limit, counts, now))
            for rule, _ in set_rules:
                rule.admitted(s, key_id, now)
            return headers

    def settle(self, s: Session, keyed: list[dict[str, Any]]) -> None:
        """Every rule counts written usage records of keyed generations (spend, credit holds,
        tokens per minute), in the transaction that writes them (``Database.add_records``); then
        rate events older than the longest rule's window go."""
        now = self._clock()
        for rule in RULES:
            rule.settle(s, keyed, now)
        purge_old_events(s, RULES, now)

    def record(self, records: list[dict[str, Any]]) -> None:
        """Write usage records, settled."""
        self.db.add_records(records, self.settle)

    def report(self, limits: KeyLimits | None, usage: float) -> dict[str, Any]:
        """Every rule's fields on /api/v1/key (nested objects merged)."""
        out: dict[str, Any] = {}
        for rule in RULES:
            for name, value in rule.report(getattr(limits, rule.field) if limits is not None else None, usage).items():
                out[name] = {**out[name], **value} if isinstance(value, dict) and name in out else value
        return out

    async def hold_credit(
        self,
        key_id: int,
        credit_limit: float | None,
        gen_id: str,
        *,
        prompt_tokens: int,
        max_tokens: int,
        prices: tuple[float, float],
        timeout_s: float | None,
    ) -> None:
        """Hold the most this generation can cost against the key's credit, or refuse it (402)
        naming the ``max_tokens`` the key can still afford."""
        if credit_limit is None:
            return
        args = (key_id, credit_limit, gen_id, prompt_tokens, max_tokens, prices, timeout_s, self._clock())
        await asyncio.to_thread(self._hold, *args)

    def _hold(
        self,
        key_id: int,
        credit_limit: float,
        gen_id: str,
        prompt_tokens: int,
        max_tokens: int,
        prices: tuple[float, float],
        timeout_s: float | None,
        now: float,
    ) -> None:
        price_prompt, price_completion = prices
        amount = prompt_tokens * price_prompt + max_tokens * price_completion
        with self.db.locked_key(key_id) as s:
            left = credit_limit - self.db.committed(s, key_id, now)
            if amount > left:
                # (+1e-9: USD sums in binary floating point land a hair under a whole token)
                affordable = (
                    max(0, math.floor((left - prompt_tokens * price_prompt) / price_completion + 1e-9)) if price_completion else 0
                )
                raise APIError(
                    402,
                    "This request requires more credits, or fewer max_tokens. "
                    f"You requested up to {max_tokens} tokens, but can only afford {affordable}.",
                    reason="credit",
                )
            lapse = now + (timeout_s if timeout_s is not None else 86_400) + _HOLD_GRACE_S
            s.add(CreditHold(gen_id=gen_id, key_id=key_id, amount=amount, expires_at=lapse))
