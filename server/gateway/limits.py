"""How much each key may use: requests and tokens per minute (sliding window) and a credit limit
(USD, from the database once, then kept current from each usage record)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from server.errors import APIError
from server.gateway.db import Database
from server.gateway.keys import KeyInfo

_WINDOW_S = 60.0


@dataclass
class _KeyState:
    requests: deque[float] = field(default_factory=deque)  # admission times, last minute
    tokens: deque[tuple[float, int]] = field(default_factory=deque)  # (time, tokens), last minute
    spend: float | None = None  # USD, loaded from the database on first use


class Limits:
    def __init__(self, db: Database | None, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock
        self._state: dict[int, _KeyState] = {}

    def _now(self) -> float:
        return self._clock()

    def _key(self, key_id: int) -> _KeyState:
        return self._state.setdefault(key_id, _KeyState())

    async def spend(self, key: KeyInfo) -> float:
        st = self._key(key.id)
        if st.spend is None:
            assert self.db is not None
            st.spend = await asyncio.to_thread(self.db.spend, key.id)
        return st.spend

    async def check(self, key: KeyInfo) -> dict[str, str]:
        """Count one request against the key; raise 402/429 when a limit is reached. Returns the
        rate-limit headers for the response."""
        now = self._now()
        st = self._key(key.id)
        if key.credit_limit is not None and await self.spend(key) >= key.credit_limit:
            raise APIError(402, f"Credit limit of ${key.credit_limit:g} reached for this key", reason="credit")
        while st.requests and st.requests[0] <= now - _WINDOW_S:
            st.requests.popleft()
        while st.tokens and st.tokens[0][0] <= now - _WINDOW_S:
            st.tokens.popleft()
        headers: dict[str, str] = {}
        if key.rpm is not None:
            reset = (st.requests[0] + _WINDOW_S) if st.requests else now + _WINDOW_S
            remaining = key.rpm - len(st.requests)
            headers = {
                "X-RateLimit-Limit": str(key.rpm),
                "X-RateLimit-Remaining": str(max(0, remaining - 1)),
                "X-RateLimit-Reset": str(int(reset * 1000)),
            }
            if remaining <= 0:
                retry = max(1, math.ceil(st.requests[0] + _WINDOW_S - now))
                headers["X-RateLimit-Remaining"] = "0"
                raise APIError(
                    429,
                    f"Rate limit exceeded: {key.rpm} requests per minute",
                    headers={**headers, "Retry-After": str(retry)},
                    reason="rate_requests",
                )
        if key.tpm is not None and sum(n for _, n in st.tokens) >= key.tpm:
            oldest = st.tokens[0][0]
            raise APIError(
                429,
                f"Rate limit exceeded: {key.tpm} tokens per minute",
                headers={
                    "X-RateLimit-Limit": str(key.tpm),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int((oldest + _WINDOW_S) * 1000)),
                    "Retry-After": str(max(1, math.ceil(oldest + _WINDOW_S - now))),
                },
                reason="rate_tokens",
            )
        st.requests.append(now)
        return headers

    def used(self, key_id: int, tokens: int, cost: float) -> None:
        """A generation of this key finished: its tokens and cost count from now."""
        st = self._key(key_id)
        st.tokens.append((self._now(), tokens))
        if st.spend is not None:
            st.spend += cost
