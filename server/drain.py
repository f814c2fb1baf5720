"""Graceful shutdown: the first SIGTERM/SIGINT drains instead of closing the listener."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI

from server.state import AppState

log = logging.getLogger("hermes.app")


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains: /ready and new requests get 503 while
    in-flight work finishes (up to the drain timeout; the rest is ended in-band and recorded).
    A second signal exits now."""

    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        super().__init__(config)
        self.hermes = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._draining or self._loop is None:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        timeout = self.hermes.settings.gateway.drain_timeout_seconds
        self.hermes.admission.draining = True
        log.info("signal %s: draining (up to %ss)", sig, timeout)
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain(timeout)))

    async def _drain(self, timeout: float) -> None:
        try:
            await self.hermes.admission.drain(timeout)
        finally:
            self.should_exit = True


def serve_app(api: FastAPI, sockets: list[socket.socket] | None = None) -> int:
    """Run the app until it is signalled (drained) or its engine fails; the exit status. Listens
    on the profile's host and port, or on ``sockets`` already bound (several API processes)."""
    state: AppState = api.state.hermes
    s = state.settings
    server = DrainingServer(
        uvicorn.Config(
            api,
            host=s.host,
            port=s.port,
            log_level=s.log_level,
            timeout_graceful_shutdown=30,
            log_config=None,
            access_log=False,  # the usage record's log line says it all, without prompt text
        ),
        state,
    )
    failed = False

    def on_engine_failure() -> None:
        nonlocal failed
        failed = True
        server.should_exit = True

    state.on_engine_failure = on_engine_failure
    server.run(sockets=sockets)
    if failed:
        print(f"hermes-server: {state.engine_error}", file=sys.stderr)
        return 1
    return 0
