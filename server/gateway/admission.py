"""How much the server takes at once: generation slots (the engine's batch), a bounded queue in
front of them, and the drain that ends it all on shutdown.

With several API processes in front of one engine (``api_processes``) the slot and queue counts
are the engine's, not a process's: they live in shared memory (:class:`SharedSlots`), changed
under one lock, so the limits are exact whichever process a connection lands on. A waiter is woken
at once by a release in its own process and looks again every few milliseconds for releases in
the others."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from server.errors import APIError
from server.serving.record import Stoppable

log = logging.getLogger("hermes.gateway")


_RATE_WINDOW_S = 60.0  # how far back the service rate is measured
_RETRY_MAX_S = 600
_CROSS_PROCESS_POLL_S = 0.005  # how often a waiter looks for slots freed by other processes


class Slots(Protocol):
    """The two counts admission decides on: ``[in_flight, waiting]``, changed under ``lock``."""

    counts: Any  # a mutable sequence of two ints
    shared: bool

    def lock(self) -> contextlib.AbstractContextManager[Any]: ...


class LocalSlots:
    """One process: plain ints; the event loop is the lock."""

    shared = False

    def __init__(self) -> None:
        self.counts = [0, 0]

    def lock(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


class SharedSlots:
    """Several API processes: two ints in shared memory and a process-shared lock, made once by
    the parent before the API processes start (they are pickled into each one). The lock is held
    for a few instructions, so taking it from the event loop never blocks it for long."""

    shared = True

    def __init__(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.counts = ctx.RawArray("q", 2)
        self._lock = ctx.Lock()

    def lock(self) -> contextlib.AbstractContextManager[Any]:
        return self._lock


class Admission:
    def __init__(
        self,
        max_in_flight: int,
        max_queue: int,
        max_wait: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        slots: Slots | None = None,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.max_wait = max_wait
        self._slots: Slots = slots if slots is not None else LocalSlots()
        self._mine = [0, 0]  # this process's share of the counts (what its drain waits for)
        self.draining = False
        self._clock = clock
        self._slot_freed = asyncio.Condition()
        self._released: deque[float] = deque()  # when slots were freed, last minute
        self._running: set[Stoppable] = set()  # generations the drain may have to end

    @property
    def in_flight(self) -> int:
        return int(self._slots.counts[0])

    @property
    def waiting(self) -> int:
        return int(self._slots.counts[1])

    def _change(self, which: int, by: int) -> None:
        self._slots.counts[which] += by
        self._mine[which] += by

    def _take_slot(self, queued: bool) -> bool:
        """A slot if one is free (for a newcomer: only when nobody waits, so the queue is FIFO
        within a process)."""
        with self._slots.lock():
            in_flight, waiting = self._slots.counts[0], self._slots.counts[1]
            if in_flight < self.max_in_flight and (queued or waiting == 0):
                self._change(0, 1)
                return True
            return False

    def _join_queue(self) -> bool:
        with self._slots.lock():
            if self._slots.counts[1] >= self.max_queue:
                return False
            self._change(1, 1)
            return True

    def _leave_queue(self) -> None:
        with self._slots.lock():
            self._change(1, -1)

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
        if self._take_slot(queued=False):
            return
        if not self._join_queue():
            raise self._busy(f"Server at capacity ({self.in_flight} in flight, {self.waiting} waiting): retry shortly")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        poll = _CROSS_PROCESS_POLL_S if self._slots.shared else None
        try:
            async with self._slot_freed:
                while not self._take_slot(queued=True):
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise self._busy(f"No generation slot came free within {self.max_wait:g} s: retry shortly")
                    # A notification that lands as the wait times out is not lost: the loop
                    # looks at the slots again before giving up.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), min(remaining, poll or remaining))
        finally:
            self._leave_queue()

    async def release(self) -> None:
        async with self._slot_freed:
            with self._slots.lock():
                self._change(0, -1)
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
        while any(self._mine) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if any(self._mine):
            log.warning("drain timeout: ending %d generations", len(self._running))
            for run in list(self._running):
                run.stop("shutdown")
            end = time.monotonic() + 10
            while any(self._mine) and time.monotonic() < end:
                await asyncio.sleep(0.05)
