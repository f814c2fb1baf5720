"""How much the server takes at once: generation slots (the engine's batch), a bounded queue in
front of them, and the drain that ends it all on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable

from server.errors import APIError
from server.serving.record import Stoppable

log = logging.getLogger("hermes.gateway")


_RATE_WINDOW_S = 60.0  # how far back the service rate is measured
_RETRY_MAX_S = 600


class Admission:
    def __init__(
        self, max_in_flight: int, max_queue: int, max_wait: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.max_wait = max_wait
        self.in_flight = 0
        self.waiting = 0
        self.draining = False
        self._clock = clock
        self._slot_freed = asyncio.Condition()
        self._released: deque[float] = deque()  # when slots were freed, last minute
        self._running: set[Stoppable] = set()  # generations the drain may have to end

    def retry_after(self) -> int:
        """Seconds until a newcomer would likely get a slot: everyone waiting, plus it, over the
        rate at which slots were freed in the last minute (at least 1 s)."""
        now = self._clock()
        self._forget_before(now - _RATE_WINDOW_S)
        if not self._released:
            return max(1, math.ceil(self.max_wait))  # nothing finished lately: no better estimate
        span = max(now - self._released[0], 1.0)
        rate = len(self._released) / span
        return min(_RETRY_MAX_S, max(1, math.ceil((self.waiting + 1) / rate)))

    def _forget_before(self, cutoff: float) -> None:
        while self._released and self._released[0] < cutoff:
            self._released.popleft()

    def _busy(self, message: str) -> APIError:
        return APIError(429, message, headers={"Retry-After": str(self.retry_after())}, reason="capacity")

    async def admit(self) -> None:
        """Take a slot, waiting in the queue if need be: 429 at once when the queue is full, and
        429 when no slot comes within ``max_wait`` seconds (a client is never left hanging)."""
        if self.in_flight < self.max_in_flight and self.waiting == 0:
            self.in_flight += 1
            return
        if self.waiting >= self.max_queue:
            raise self._busy(f"Server at capacity ({self.in_flight} in flight, {self.waiting} waiting): retry shortly")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        self.waiting += 1
        try:
            async with self._slot_freed:
                while self.in_flight >= self.max_in_flight:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise self._busy(f"No generation slot came free within {self.max_wait:g} s: retry shortly")
                    # A notification that lands as the wait times out is not lost: the loop
                    # looks at the slots again before giving up.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), remaining)
                self.in_flight += 1
        finally:
            self.waiting -= 1

    async def release(self) -> None:
        async with self._slot_freed:
            self.in_flight -= 1
            now = self._clock()
            self._released.append(now)
            self._forget_before(now - _RATE_WINDOW_S)  # bounded by a minute's releases, 429s or not
            self._slot_freed.notify()

    # A generation's life, told by the serving core (through the app's observer).
    def started(self, run: Stoppable) -> None:
        self._running.add(run)

    def finished(self, run: Stoppable) -> None:
        self._running.discard(run)

    @property
    def running(self) -> int:
        return len(self._running)

    async def drain(self, timeout: float) -> None:
        """Refuse new work; let in-flight requests finish for up to ``timeout`` s, then end the
        rest (they fail in-band with a 503 and are recorded), and wait for them to wind down."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while (self.in_flight or self.waiting) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.in_flight or self.waiting:
            log.warning("drain timeout: ending %d generations", len(self._running))
            for run in list(self._running):
                run.stop("shutdown")
            end = time.monotonic() + 10
            while (self.in_flight or self.waiting) and time.monotonic() < end:
                await asyncio.sleep(0.05)
