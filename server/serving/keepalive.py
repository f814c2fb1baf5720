"""Keep-alives for streams that may stay silent (a long prompt's prefill, a queue, reasoning that
is not sent): the serving core wraps a plan's batches in it, so every API gets them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

T = TypeVar("T")


async def with_keepalive(source: AsyncIterator[T], interval: float, tick: T) -> AsyncIterator[T]:
    """Yield the source's items, and ``tick`` whenever ``interval`` seconds pass without one.

    A pump task fetches the next item only when the consumer asks for it (so while the consumer
    is busy, vLLM keeps merging new tokens into one delta, as it does for its own server), and a
    ticker task puts a tick in the queue after ``interval`` seconds of silence. The consumer only
    awaits ``queue.get()``: no task or timer per token (an ``asyncio.wait`` with a timeout per
    item cost ~8 % of the API process at 64 streams). Items are never lost or reordered; the
    source's errors reach the consumer in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    want = asyncio.Event()
    last = [loop.time()]

    async def pump() -> None:
        try:
            while True:
                await want.wait()
                want.clear()
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    queue.put_nowait(("end", None))
                    return
                last[0] = loop.time()
                queue.put_nowait(("item", item))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, which re-raises it
            queue.put_nowait(("error", exc))

    async def ticker() -> None:
        while True:
            wait = last[0] + interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            last[0] = loop.time()
            queue.put_nowait(("tick", None))

    tasks = [asyncio.create_task(pump()), asyncio.create_task(ticker())]
    try:
        want.set()
        while True:
            kind, value = await queue.get()
            if kind == "item":
                yield value
                want.set()
            elif kind == "tick":
                yield tick
            elif kind == "end":
                return
            else:
                raise value
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await source.aclose()  # type: ignore[attr-defined]
