"""How much the server takes at once: generation slots (the engine's batch), a bounded queue in
front of them, and the drain that ends it all on shutdown."""

from __future__ import annotations

import asyncio
import logging
import time

from server.errors import APIError
from server.serving.record import Stoppable

log = logging.getLogger("hermes.gateway")


class Admission:
    def __init__(self, max_in_flight: int, max_queue: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.in_flight = 0
        self.waiting = 0
        self.draining = False
        self._slot_freed = asyncio.Condition()
        self._running: set[Stoppable] = set()  # generations the drain may have to end

    async def admit(self) -> None:
        """Take a slot, waiting in the queue if need be; 429 when the queue is full."""
        if self.in_flight < self.max_in_flight and self.waiting == 0:
            self.in_flight += 1
            return
        if self.waiting >= self.max_queue:
            raise APIError(
                429,
                f"Server at capacity ({self.in_flight} in flight, {self.waiting} waiting): retry shortly",
                headers={"Retry-After": "1"},
                reason="capacity",
            )
        self.waiting += 1
        try:
            async with self._slot_freed:
                await self._slot_freed.wait_for(lambda: self.in_flight < self.max_in_flight)
                self.in_flight += 1
        finally:
            self.waiting -= 1

    async def release(self) -> None:
        async with self._slot_freed:
            self.in_flight -= 1
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
