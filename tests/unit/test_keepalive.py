"""The stream keep-alive wrapper: items in order, None during silences, errors and early close
passed through, and the source pulled only as fast as the consumer reads."""

from __future__ import annotations

import asyncio

import pytest

from server.engine.base import EngineDelta
from server.serving.keepalive import with_keepalive


async def _source(delays: list[float], log: list[str], fail_at: int | None = None):
    try:
        for i, d in enumerate(delays):
            await asyncio.sleep(d)
            if i == fail_at:
                raise RuntimeError("engine died")
            log.append(f"made {i}")
            yield EngineDelta(text=str(i), token_ids=[i])
    finally:
        log.append("closed")


async def test_items_in_order_with_ticks_in_silences() -> None:
    log: list[str] = []
    out = [d.text if d else None async for d in with_keepalive(_source([0, 0, 0.35, 0], log), 0.1, None)]
    assert [x for x in out if x is not None] == ["0", "1", "2", "3"]
    i2 = out.index("2")
    assert 2 <= out[:i2].count(None) <= 4 and out.index("1") < i2  # ticks only in the 0.35 s gap
    assert out[-1] == "3" and log[-1] == "closed"


async def test_error_reaches_the_consumer_after_earlier_items() -> None:
    log: list[str] = []
    got: list[str] = []
    with pytest.raises(RuntimeError, match="engine died"):
        async for d in with_keepalive(_source([0, 0, 0], log, fail_at=2), 1.0, None):
            if d is not None:
                got.append(d.text)
    assert got == ["0", "1"] and log[-1] == "closed"


async def test_pulls_only_what_is_read_and_closes_on_early_exit() -> None:
    log: list[str] = []
    gen = with_keepalive(_source([0] * 10, log), 1.0, None)
    first = await gen.__anext__()
    await asyncio.sleep(0.05)
    assert first is not None and first.text == "0"
    assert log == ["made 0"]  # nothing is pulled while the reader is busy: vLLM merges it meanwhile
    second = await gen.__anext__()
    await asyncio.sleep(0.05)
    assert second is not None and second.text == "1" and log == ["made 0", "made 1"]
    await gen.aclose()
    assert log[-1] == "closed"
