"""How much each key may use: requests and tokens per minute (sliding window) and a credit limit
(USD). Counted in the database (see ``db.Database.locked_key``), so the limits are exact however
many API processes, or nodes on one PostgreSQL database, serve the key.

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

from server.errors import APIError
from server.gateway.db import CreditHold, Database, RateEvent
from server.gateway.keys import KeyInfo

_WINDOW_S = 60.0
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
        if key.credit_limit is None and key.rpm is None and key.tpm is None:
            return {}
        return await asyncio.to_thread(self._check, key, self._clock())

    def _check(self, key: KeyInfo, now: float) -> dict[str, str]:
        with self.db.locked_key(key.id) as s:
            if key.credit_limit is not None and self.db.committed(s, key.id, now) >= key.credit_limit:
                raise APIError(402, f"Credit limit of ${key.credit_limit:g} reached for this key", reason="credit")
            requests, tokens, oldest_request, oldest_tokens = self.db.recent(s, key.id, now - _WINDOW_S)
            headers: dict[str, str] = {}
            if key.rpm is not None:
                reset = (oldest_request + _WINDOW_S) if oldest_request is not None else now + _WINDOW_S
                remaining = key.rpm - requests
                headers = {
                    "X-RateLimit-Limit": str(key.rpm),
                    "X-RateLimit-Remaining": str(max(0, remaining - 1)),
                    "X-RateLimit-Reset": str(int(reset * 1000)),
                }
                if remaining <= 0:
                    headers["X-RateLimit-Remaining"] = "0"
                    raise APIError(
                        429,
                        f"Rate limit exceeded: {key.rpm} requests per minute",
                        headers={**headers, "Retry-After": str(_retry_after(reset, now))},
                        reason="rate_requests",
                    )
            if key.tpm is not None and tokens >= key.tpm and oldest_tokens is not None:
                reset = oldest_tokens + _WINDOW_S
                raise APIError(
                    429,
                    f"Rate limit exceeded: {key.tpm} tokens per minute",
                    headers={
                        "X-RateLimit-Limit": str(key.tpm),
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": str(int(reset * 1000)),
                        "Retry-After": str(_retry_after(reset, now)),
                    },
                    reason="rate_tokens",
                )
            if key.rpm is not None:
                s.add(RateEvent(key_id=key.id, at=now, requests=1, tokens=0))
            return headers

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


def _retry_after(reset: float, now: float) -> int:
    return max(1, math.ceil(reset - now))
