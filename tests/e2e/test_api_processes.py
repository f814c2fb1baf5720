"""``api_processes: 2``: two API processes on one port in front of one engine core, with keys,
limits, usage records, metrics and drain exact across them (the real engine on the CPU build)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RunningServer, start_server, stop_server
from tests.e2e.test_gateway import MODEL, _auth, _env, _key

pytestmark = pytest.mark.e2e


class Two:
    def __init__(self, server: RunningServer, keys: dict[str, str], db: Path, env: dict[str, str], tmp: Path) -> None:
        self.server, self.keys, self.db = server, keys, db
        self.env, self.tmp = env, tmp  # to start it again, as its service manager would


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Two]:
    tmp = tmp_path_factory.mktemp("api-processes")
    db = tmp / "hermes.db"
    env = _env(
        db,
        HERMES_API_PROCESSES="2",
        HERMES_GATEWAY__MAX_IN_FLIGHT="3",
        HERMES_GATEWAY__MAX_QUEUE="0",
        HERMES_GATEWAY__DRAIN_TIMEOUT_SECONDS="60",  # the drain test's streams finish well inside it
        HERMES_SAMPLING__MAX_TOKENS="12",  # the ceiling for requests that set no max_tokens
    )
    keys = {
        "plain": _key(env, "--label", "plain"),
        "rpm": _key(env, "--label", "rpm", "--rpm", "2"),
        "credit": _key(env, "--label", "credit", "--credit-limit", "0.00003"),
        "short": _key(env, "--label", "short", "--max-tokens", "5"),
    }
    server = start_server(tmp, "api-processes", env=env, own_group=True)
    _until_both_ready(server)
    two = Two(server, keys, db, env, tmp)
    yield two
    stop_server(two.server)


def _until_both_ready(server: RunningServer) -> None:
    """/ready from a fresh connection lands on either process: wait for many in a row."""
    in_a_row, deadline = 0, time.monotonic() + 300
    while in_a_row < 12 and time.monotonic() < deadline:
        with httpx.Client(timeout=5) as c:  # a new connection each time
            in_a_row = in_a_row + 1 if c.get(server.url + "/ready").status_code == 200 else 0
        time.sleep(0.1)
    assert in_a_row >= 12, "the API processes did not all become ready"


def _body(tokens: int, stream: bool = False) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": tokens,
        "min_tokens": tokens,
        "temperature": 0,
        "top_p": 1,
        "stream": stream,
    }


async def _burst(two: Two, key: str, n: int, tokens: int) -> list[httpx.Response]:
    """``n`` requests at once, each on its own connection (so the kernel spreads them)."""

    async def one() -> httpx.Response:
        async with httpx.AsyncClient(timeout=120) as c:
            return await c.post(two.server.v1 + "/chat/completions", json=_body(tokens), headers=_auth(two.keys[key]))

    return list(await asyncio.gather(*(one() for _ in range(n))))


def _records(two: Two) -> list[tuple[str, int | None, float]]:
    with sqlite3.connect(two.db) as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute("SELECT id, key_id, cost FROM generations")]


def _served_by(two: Two) -> set[str]:
    names = set()
    for line in two.server.log.read_text(errors="replace").splitlines():
        if '"msg": "generation' in line:
            names.add(json.loads(line).get("vllm_process_name", "?"))
    return names


def test_limits_usage_and_metrics_are_exact_across_processes(two: Two) -> None:
    # rpm 2, six requests at once over both processes: exactly two get through.
    statuses = sorted(r.status_code for r in asyncio.run(_burst(two, "rpm", 6, 2)))
    assert statuses == [200, 200, 429, 429, 429, 429]

    # Three slots for the whole engine (no queue): of six long requests at once, exactly three run.
    slots = sorted(r.status_code for r in asyncio.run(_burst(two, "plain", 6, 1000)))
    assert slots == [200, 200, 200, 429, 429, 429]

    # Credit: each request holds its largest cost first (~19 micro-dollars: a short prompt and
    # 40 tokens), so of three at once only one fits in 30 micro-dollars and nothing overspends.
    credit = asyncio.run(_burst(two, "credit", 3, 40))
    assert sorted(r.status_code for r in credit) == [200, 402, 402]
    time.sleep(1)  # usage records are written in the background, within milliseconds
    records = _records(two)
    spent = sum(cost for _, key_id, cost in records if key_id == _key_id(two, "credit"))
    assert 0 < spent <= 0.00003

    # Every generation recorded once, whichever process ran it.
    ok = 2 + 3 + 1
    ids = [gen_id for gen_id, _, _ in records]
    assert len(ids) == len(set(ids)) == ok
    for r in credit:
        if r.status_code == 200:  # /api/v1/generation answers from either process
            got = httpx.get(
                two.server.api_v1 + "/generation",
                params={"id": r.headers["X-Generation-Id"]},
                headers=_auth(two.keys["credit"]),
                timeout=30,
            )
            assert got.status_code == 200

    # /metrics on either process adds up both processes' generations.
    for _ in range(4):
        assert two.server.metric("hermes_generations_total") == ok
        assert two.server.metric("hermes_ready") == 1.0  # whichever process answers (the alerts read it)

    # Both processes serve. The kernel hands a new connection to whichever process accepts first,
    # so a burst can land on one of them (one CI run: all six on ApiServer_1); new connections
    # until both have answered, bounded.
    both = {"ApiServer_0", "ApiServer_1"}
    for _ in range(40):
        if _served_by(two) == both:
            break
        with httpx.Client(timeout=60) as c:
            c.post(two.server.v1 + "/chat/completions", json=_body(1), headers=_auth(two.keys["plain"]))
        time.sleep(0.05)
    assert _served_by(two) == both


def test_requests_without_max_tokens_stop_at_the_profiles_or_the_keys_ceiling(two: Two) -> None:
    """A request that sets no max_tokens gets the profile's sampling.max_tokens (published as
    top_provider.max_completion_tokens), or its key's own; one that sets it keeps its own."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "ignore_eos": True, "top_p": 1}

    def completion(key: str, **extra: object) -> tuple[int, str]:
        r = httpx.post(two.server.v1 + "/chat/completions", json={**body, **extra}, headers=_auth(two.keys[key]), timeout=120)
        assert r.status_code == 200, r.text
        return r.json()["usage"]["completion_tokens"], r.json()["choices"][0]["finish_reason"]

    assert completion("plain") == (12, "length")
    assert completion("short") == (5, "length")
    assert completion("short", max_tokens=20) == (20, "length")
    listed = httpx.get(two.server.api_v1 + "/models", timeout=30).json()["data"][0]
    assert listed["top_provider"]["max_completion_tokens"] == 12


def _key_id(two: Two, label: str) -> int:
    with sqlite3.connect(two.db) as conn:
        return int(conn.execute("SELECT id FROM api_keys WHERE label = ?", (label,)).fetchone()[0])


def test_an_api_process_killed_stops_the_server_for_its_restart(two: Two) -> None:
    """SIGKILL one API process under three streams, as the OOM killer would: no stream hangs
    (those on the dead process lose their connection, the others finish as in a drain), the
    server exits non-zero for its service manager, and started again it serves."""
    import threading

    import psutil

    ends: list[str] = []

    def stream() -> None:
        try:
            with httpx.stream(
                "POST", two.server.v1 + "/chat/completions", json=_body(600, True), headers=_auth(two.keys["plain"]), timeout=120
            ) as r:
                lines = list(r.iter_lines())
            ends.append("finished" if any('"finish_reason":"length"' in x.replace(" ", "") for x in lines) else "error event")
        except httpx.TransportError:
            ends.append("connection lost")

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    family = psutil.Process(two.server.process.pid).children(recursive=True)
    api = sorted((p for p in family if "APIServer" in " ".join([p.name(), *p.cmdline()])), key=lambda p: p.name())
    assert len(api) == 2, [(p.pid, p.name()) for p in family]
    killed = time.monotonic()
    os.kill(api[0].pid, signal.SIGKILL)
    for t in threads:
        t.join(timeout=120)
    assert len(ends) == 3, ends  # none hangs
    code = two.server.process.wait(timeout=120)
    exited = time.monotonic()
    assert code != 0
    two.server = start_server(two.tmp, "api-processes-restarted", env=two.env, own_group=True)
    _until_both_ready(two.server)
    print(
        f"\nAPI process killed: streams {sorted(ends)}; the server exited {code} after {exited - killed:.1f} s; "
        f"started again, both processes ready {time.monotonic() - exited:.1f} s later"
    )
    r = httpx.post(two.server.v1 + "/chat/completions", json=_body(4), headers=_auth(two.keys["plain"]), timeout=60)
    assert r.status_code == 200


def test_drain_covers_every_process(two: Two) -> None:
    """SIGTERM to the whole process group: both processes finish their streams, say 503 to
    newcomers meanwhile, then the port closes."""

    async def stream() -> str:
        async with (
            httpx.AsyncClient(timeout=120) as c,
            c.stream("POST", two.server.v1 + "/chat/completions", json=_body(1000, True), headers=_auth(two.keys["plain"])) as r,
        ):
            finished = False
            async for line in r.aiter_lines():
                finished = finished or ('"finish_reason":"length"' in line.replace(" ", ""))
            return "finished" if finished else "cut"

    async def run() -> tuple[list[str], list[int]]:
        streams = [asyncio.create_task(stream()) for _ in range(3)]
        await asyncio.sleep(1.5)  # all three streaming: 1,000 tokens take well over the 0.5 s below
        assert not any(s.done() for s in streams), "a stream ended before the signal"
        os.killpg(two.server.process.pid, signal.SIGTERM)
        await asyncio.sleep(0.5)
        during = []
        for _ in range(4):
            async with httpx.AsyncClient(timeout=10) as c:
                during.append((await c.get(two.server.url + "/ready")).status_code)
        return list(await asyncio.gather(*streams)), during

    with two.server.explained():
        outcomes, during = asyncio.run(run())
    assert outcomes == ["finished"] * 3
    assert during == [503] * 4
    assert two.server.process.wait(timeout=120) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(two.server.url + "/ready", timeout=5)
