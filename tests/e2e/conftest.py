"""Start the real server (real vLLM CPU engine, tiny model) as a subprocess over real HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.otlp_collector import Collector

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
START_TIMEOUT = float(os.environ.get("HERMES_TEST_START_TIMEOUT", "600"))


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    @property
    def api_v1(self) -> str:
        return self.url + "/api/v1"

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    @contextlib.contextmanager
    def explained(self) -> Iterator[None]:
        """A request that cannot reach the server fails with the server's state and its log,
        not a bare connection error (which says nothing of why the port closed)."""
        try:
            yield
        except httpx.TransportError as e:
            code = self.process.poll()
            state = "still running" if code is None else f"exited with {code}"
            pytest.fail(f"{e!r}; the server {state}; its log:\n{self.log_tail()}")

    def metric(self, sample: str, **labels: str) -> float | None:
        """The sum of the ``sample`` series on /metrics whose labels include ``labels``; None
        when there is no such series (prometheus_client's own parser reads the text)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.url + "/metrics", timeout=10).text
        values = [
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == sample and labels.items() <= s.labels.items()
        ]
        return sum(values) if values else None

    def unfinished(self) -> float:
        """The engine's own count of unfinished requests, as exported on /metrics."""
        value = self.metric("hermes_engine_unfinished_requests")
        assert value is not None, "metric hermes_engine_unfinished_requests missing"
        return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    tmp: Path, name: str, config: str = "configs/tiny-cpu.yaml", env: dict[str, str] | None = None, own_group: bool = False
) -> RunningServer:
    """``own_group``: the server leads a process group of its own, so a test can signal the whole
    group as a terminal or a process manager would. A group in the test run's session, not a new
    session: in three CI runs, and never outside CI, servers started in sessions of their own
    stopped answering (refused connections, a stalled engine) while all others went on."""
    port = free_port()
    log = tmp / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--config", config, "--port", str(port)],
        cwd=ROOT,
        env=full_env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        process_group=0 if own_group else None,
    )
    server = RunningServer(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server {name} exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_server(server)
    raise RuntimeError(f"server {name} not ready after {START_TIMEOUT}s:\n{server.log_tail()}")


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="session")
def otlp() -> Iterator[Collector]:
    """An OTLP trace receiver the shared server exports its spans to (tests/e2e/test_tracing_otlp.py)."""
    collector = Collector()
    yield collector
    collector.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, otlp: Collector) -> Iterator[RunningServer]:
    # Traced as an operator would turn it on: the standard variables, spans exported every 200 ms.
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_SERVICE_NAME": "hermes-e2e"}
    s = start_server(tmp_path_factory.mktemp("server"), "tp1", env=env)
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def client(server: RunningServer):
    from openai import OpenAI

    return OpenAI(base_url=server.v1, api_key="unused-on-the-tiny-profile", max_retries=0, timeout=120)
