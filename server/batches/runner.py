"""Runs batches: each server process claims pending requests from the database and sends them
through its own app, as a request from the batch's key would come (same validation, limits,
admission, usage records), at the lowest priority and never more than its share of the slots.

A request goes in as an ASGI call with the batch in the scope (``hermes_batch``: the key and the
batch id). Nothing a client sends can put it there, so the gateway trusts it in place of a
bearer token. A refusal that says "later" (503 while the server drains or warms up, 429 at
capacity) hands the request back; any other answer is its result, stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from server.batches.store import BatchStore, Claimed
from server.gateway.keys import KeyInfo
from server.state import AppState

log = logging.getLogger("hermes.batches")

LEASE_S = 30.0  # a claim lapses this long after its runner last renewed it
_RENEW_S = 10.0
# With nothing to run the poll slows down to this: two database transactions every half second
# were most of an idle API process's CPU. A batch created or cancelled through this process
# wakes the runner at once (``wake``); one created through another process waits at most this.
_IDLE_POLL_S = 4.0
_RETRY_LATER = (429, 503)


class BatchRunner:
    def __init__(self, app: Any, state: AppState, concurrency: int, poll_seconds: float = 0.5) -> None:
        self.app, self.state = app, state
        self.store = BatchStore(state.db)
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self._running: dict[asyncio.Task[None], Claimed] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def wake(self) -> None:
        """Look for work now (a batch was created or cancelled), not at the next idle poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop claiming; requests still running are handed back for another runner (or this
        server's next start) to run again: their results were not stored."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        running = dict(self._running)  # a task leaves the map as it ends, cancelled or not
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if running:  # only those still running are handed back: a stored result stays
            await asyncio.to_thread(self.store.release, list(running.values()))

    async def _loop(self) -> None:
        renewed = time.monotonic()
        pause = self.poll_seconds
        while True:
            busy = True
            try:
                busy = await self._step()
                if self._running and time.monotonic() - renewed > _RENEW_S:
                    await asyncio.to_thread(self.store.renew, list(self._running.values()), LEASE_S)
                    renewed = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup: log it, try again on the next tick
                log.exception("batch runner step failed")
            pause = next_pause(pause, busy, self.poll_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            self._wake.clear()

    async def _step(self) -> bool:
        """Settle ended batches and claim what there is room for; False when there was nothing
        to do (nothing settled, claimed or running)."""
        ended = await asyncio.to_thread(self.store.settle)
        for row in ended:
            log.info("batch %s %s", row.id, row.status)
        free = self.concurrency - len(self._running)
        if free <= 0 or self.state.not_ready() is not None:
            return True
        claimed = await asyncio.to_thread(self.store.claim, free, LEASE_S)
        for c in claimed:
            task = asyncio.create_task(self._run(c))
            self._running[task] = c
            task.add_done_callback(lambda t: self._running.pop(t, None))
        return bool(ended or claimed or self._running)

    async def _run(self, c: Claimed) -> None:
        key = await asyncio.to_thread(self._key, c.key_id)
        if c.key_id is not None and key is None:
            await asyncio.to_thread(self.store.finish, c, 401, _error(401, "The batch's key no longer works"), None)
            return
        body = {**c.body, "stream": False}
        if c.model is not None:
            body.setdefault("model", c.model)
        status, headers, payload = await call(self.app, c.endpoint, body, {"key": key, "batch_id": c.batch_id})
        if status in _RETRY_LATER:
            await asyncio.sleep(1.0)  # the server said later: the request goes back to the queue
            await asyncio.to_thread(self.store.release, [c])
            return
        await asyncio.to_thread(self.store.finish, c, status, payload, headers.get("x-generation-id"))

    def _key(self, key_id: int | None) -> KeyInfo | None:
        if key_id is None:
            return None
        return self.state.keys.by_id(key_id)


def next_pause(pause: float, busy: bool, poll_seconds: float) -> float:
    """The wait before the next poll: ``poll_seconds`` while there is work, doubling up to
    ``_IDLE_POLL_S`` while there is none."""
    return poll_seconds if busy else min(pause * 2, max(poll_seconds, _IDLE_POLL_S))


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message}}


async def call(app: Any, path: str, body: dict[str, Any], batch: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    """One POST through the app, in process: (status, headers, JSON body). Hand-written: httpx's
    ASGI transport builds its own scope, and the batch must travel in it."""
    raw = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        "client": ("batch-runner", 0),
        "server": ("127.0.0.1", 0),
        "hermes_batch": batch,
    }
    sent = False
    status, headers, chunks = 500, {}, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the runner waits for the whole answer
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            headers.update({k.decode().lower(): v.decode() for k, v in message.get("headers", [])})
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    data = b"".join(chunks)
    with contextlib.suppress(ValueError):
        return status, headers, json.loads(data)
    return status, headers, _error(status, data.decode(errors="replace")[:500])
