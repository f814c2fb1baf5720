"""The one SSE writer every stream goes through: frames in, a streaming response out, with
keep-alives written by the response itself.

Why keep-alives live here and not in the event stream: a stream that may stay silent (a long
prompt's prefill, a queue, reasoning that is not sent) needs a frame every few seconds, and the
only code that knows when the connection last carried a byte is the writer. Done anywhere
earlier, a silence needs a second task to notice it while the first waits for the engine, and
every token then crosses between the two tasks (three wake-ups per engine step instead of one,
measured as the largest cost of the API process's own after the socket writes). Here the frames
come straight from the engine's task, and a ticker that sleeps for the whole interval writes a
keep-alive only when nothing else was written for that long.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from server.jsonio import dumps

SSE_DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    """One server-sent event; ``event`` names it (Responses and Anthropic streams do)."""
    data = b"data: " + dumps(payload) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data


def sse_comment(text: str) -> bytes:
    return b": " + text.encode() + b"\n\n"


class SSEResponse(StreamingResponse):
    """``frames`` as server-sent events, and a keep-alive whenever ``interval`` seconds pass
    without a write; ``keepalive_first``: one at once too (headers and a first byte before the
    first token, for APIs whose own first frame waits for it)."""

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        headers: dict[str, str],
        keepalive: bytes,
        interval: float,
        keepalive_first: bool = True,
    ) -> None:
        super().__init__(
            frames,
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.keepalive, self.interval, self.keepalive_first = keepalive, interval, keepalive_first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream in this task and watch for the client's disconnect in a side task. Starlette
        (under uvicorn's ASGI 2.3) does it the other way round: the stream starts in a new task,
        a turn of the event loop later, and in a burst of requests a turn is tens of
        milliseconds during which the engine has not yet been sent the request."""
        streaming = asyncio.current_task()
        assert streaming is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            streaming.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            # The client left (what Starlette's cancelled task group swallows too); any other
            # cancellation is passed on.
            if not gone or streaming.uncancel() > 0:
                raise
        finally:
            watcher.cancel()

    async def stream_response(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        lock = asyncio.Lock()  # a keep-alive never lands inside another write
        last = loop.time()

        async def write(chunk: bytes) -> None:
            nonlocal last
            async with lock:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            last = loop.time()

        async def ticker() -> None:
            while True:
                wait = last + self.interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    await write(self.keepalive)

        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if self.keepalive_first:
            await write(self.keepalive)
        tick = asyncio.create_task(ticker())
        try:
            async for chunk in self.body_iterator:
                await write(chunk.encode() if isinstance(chunk, str) else bytes(chunk))
        finally:
            tick.cancel()
            await asyncio.gather(tick, return_exceptions=True)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def sse_response(
    frames: AsyncIterator[bytes], headers: dict[str, str], keepalive: bytes, interval: float, keepalive_first: bool = True
) -> SSEResponse:
    return SSEResponse(frames, headers, keepalive, interval, keepalive_first)
