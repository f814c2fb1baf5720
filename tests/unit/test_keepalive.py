"""The SSE writer's keep-alives: one at once, then only during silences of the interval; frames in
order; the source read straight from the response's task and closed when the client goes."""

from __future__ import annotations

import asyncio
from typing import Any

from server.serving.sse import SSEResponse

TICK = b": tick\n\n"


async def _frames(delays: list[float], log: list[str]):
    try:
        for i, d in enumerate(delays):
            await asyncio.sleep(d)
            log.append(f"made {i}")
            yield f"{i}".encode()
    finally:
        log.append("closed")


async def _written(response: SSEResponse) -> list[bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await response.stream_response(send)
    assert sent[0]["type"] == "http.response.start" and sent[-1] == {
        "type": "http.response.body",
        "body": b"",
        "more_body": False,
    }
    return [m["body"] for m in sent[1:-1]]


async def test_a_keepalive_at_once_then_only_in_silences() -> None:
    log: list[str] = []
    body = await _written(SSEResponse(_frames([0, 0, 0.35, 0], log), {}, TICK, 0.1))
    assert body[0] == TICK  # headers and a first byte before any token
    frames = [b for b in body if b != TICK]
    assert frames == [b"0", b"1", b"2", b"3"]
    gap = body[body.index(b"1") + 1 : body.index(b"2")]
    assert 2 <= len(gap) <= 4 and set(gap) == {TICK}  # ticks only in the 0.35 s silence
    assert body.index(b"3") == body.index(b"2") + 1 and log[-1] == "closed"


async def test_no_keepalive_while_frames_flow() -> None:
    body = await _written(SSEResponse(_frames([0.01] * 20, []), {}, TICK, 0.5))
    assert body.count(TICK) == 1 and body[0] == TICK


async def test_a_client_gone_closes_the_source() -> None:
    log: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        if message.get("body") == b"1":
            raise asyncio.CancelledError  # as the disconnect listener's cancellation arrives

    response = SSEResponse(_frames([0] * 10, log), {}, TICK, 1.0)
    task = asyncio.create_task(response.stream_response(send))
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() or task.exception() is not None
    await response.body_iterator.aclose()  # type: ignore[attr-defined]
    assert log[-1] == "closed" and "made 2" not in log  # nothing was pulled past what was written


_SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}}  # uvicorn's: no in-band disconnect on send


async def test_the_stream_runs_in_the_requests_own_task() -> None:
    """No turn of the event loop between the response being called and the source's first read
    (Starlette's StreamingResponse starts the stream in a new task)."""
    seen: list[asyncio.Task[Any] | None] = []

    async def frames():
        seen.append(asyncio.current_task())
        yield b"0"

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        return {}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def respond() -> None:
        await SSEResponse(frames(), {}, TICK, 1.0)(_SCOPE, receive, send)

    task = asyncio.create_task(respond())
    await task
    assert seen == [task]


async def test_a_disconnect_ends_the_stream_and_the_response_quietly() -> None:
    log: list[str] = []
    gone = asyncio.Event()
    written: list[bytes] = []

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        written.append(message.get("body", b""))
        if message.get("body") == b"1":
            gone.set()

    await asyncio.wait_for(SSEResponse(_frames([0.01] * 50, log), {}, TICK, 1.0)(_SCOPE, receive, send), 5)
    assert log[-1] == "closed" and "made 5" not in log  # stopped within a frame or two, source closed
    assert b"" not in written[1:]  # no end of body written for a client that left


async def test_a_cancellation_from_elsewhere_is_passed_on() -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def send(message: dict[str, Any]) -> None:
        pass

    task = asyncio.create_task(SSEResponse(_frames([0.05] * 50, []), {}, TICK, 1.0)(_SCOPE, receive, send))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
