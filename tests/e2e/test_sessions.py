"""Sessions over two data-parallel replicas on the CPU build (one server for the module, keys on,
priority scheduling, one sequence per replica so queues form): affinity routing seen through
vLLM's own per-engine counters, bounded-load spills, per-key cache isolation and service tiers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RunningServer, start_server, stop_server
from tests.e2e.test_gateway import _auth, _key

pytestmark = pytest.mark.e2e

GREEDY = {"temperature": 0, "top_p": 1}
PROMPTS = ["Tell me about ducks", "Hello there, how are you?", "Once upon a time"]
# Long enough to be worth caching (well over one 128-token CPU block), different per test.
LONG = "Here is the project's context, read it before you answer. " * 30


class DP2:
    def __init__(self, server: RunningServer, env: dict[str, str]) -> None:
        self.server, self.env = server, env
        self.keys = {name: _key(env, "--label", name) for name in ("alice", "bob")}

    def chat(self, key: str, content: str, **extra: object) -> dict[str, object]:
        body = {"messages": [{"role": "user", "content": content}], "max_tokens": 8, **GREEDY, **extra}
        with self.server.explained():
            r = httpx.post(self.server.v1 + "/chat/completions", json=body, headers=_auth(self.keys[key]), timeout=300)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def per_engine(self) -> dict[str, float]:
        """Requests each engine finished, by vLLM's own counter."""
        return {engine: self.server.metric("vllm:request_success_total", engine=engine) or 0.0 for engine in ("0", "1")}

    def served_by(self, key: str, content: str, **extra: object) -> tuple[str, dict[str, object]]:
        """Which engine served one request (by the counters' change), and its body."""
        before = self.per_engine()
        body = self.chat(key, content, **extra)
        deadline = time.monotonic() + 10
        while True:  # vLLM's counters are updated by its stats logger, a moment after the response
            after = self.per_engine()
            moved = [e for e in after if after[e] > before[e]]
            if moved or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(moved) == 1, (before, after)
        return moved[0], body


@pytest.fixture(scope="module")
def dp2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DP2]:
    tmp: Path = tmp_path_factory.mktemp("dp2")
    env = {
        "HERMES_DATABASE_URL": f"sqlite:///{tmp / 'dp2.db'}",
        "HERMES_AUTH_REQUIRED": "1",
        "HERMES_ENGINE__DATA_PARALLEL_SIZE": "2",
        "HERMES_ENGINE__KV_CACHE_MEMORY_BYTES": str(256 << 20),
        "HERMES_ENGINE__MAX_NUM_SEQS": "1",
        "HERMES_ENGINE__SCHEDULING_POLICY": "priority",
        "HERMES_GATEWAY__MAX_IN_FLIGHT": "32",
    }
    server = start_server(tmp, "dp2", env=env)
    try:
        yield DP2(server, env)
    finally:
        stop_server(server)


def _cached(body: dict[str, object]) -> int:
    return int(body["usage"]["prompt_tokens_details"]["cached_tokens"])  # type: ignore[index]


def _text(body: dict[str, object]) -> str:
    return str(body["choices"][0]["message"]["content"])  # type: ignore[index]


def test_replicas_answer_as_one_engine_does(dp2: DP2, server: RunningServer) -> None:
    for prompt in PROMPTS:
        single = httpx.post(
            server.v1 + "/chat/completions",
            json={"messages": [{"role": "user", "content": prompt}], "max_tokens": 8, **GREEDY},
            timeout=300,
        ).json()
        assert _text(dp2.chat("alice", prompt)) == _text(single)


def test_a_sessions_turns_stay_on_one_replica_and_two_sessions_spread(dp2: DP2) -> None:
    homes: dict[str, set[str]] = {"one": set(), "two": set()}
    for turn in range(3):
        for session in homes:
            engine, body = dp2.served_by("alice", f"{LONG} {session} turn {turn}", session_id=f"s-{session}")
            homes[session].add(engine)
            if turn:  # the shared context was cached on the session's replica
                assert _cached(body) >= 128, body["usage"]
    assert all(len(engines) == 1 for engines in homes.values()), homes
    assert homes["one"] != homes["two"], homes  # placed apart


def test_a_hot_session_spills_past_the_load_bound(dp2: DP2) -> None:
    before = dp2.per_engine()

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=300) as c:
            body = {
                "messages": [{"role": "user", "content": "Hot"}],
                "max_tokens": 48,
                "min_tokens": 48,
                "ignore_eos": True,
                "session_id": "s-hot",
                **GREEDY,
            }
            rs = await asyncio.gather(
                *(c.post(dp2.server.v1 + "/chat/completions", json=body, headers=_auth(dp2.keys["alice"])) for _ in range(12))
            )
            return [r.status_code for r in rs]

    assert asyncio.run(burst()) == [200] * 12
    time.sleep(1)
    after = dp2.per_engine()
    moved = sorted(after[e] - before[e] for e in after)
    # The home takes requests up to the spill floor (8 running + waiting), the rest spill.
    assert moved[0] >= 1 and moved[1] >= 8, moved
    assert dp2.server.metric("hermes_replica_requests_total", route="spill"), "no request spilled"


def test_keys_do_not_share_cached_prefixes(dp2: DP2) -> None:
    prompt = "A context nobody has sent before, kept for the isolation check. " * 30
    home, first = dp2.served_by("alice", prompt, session_id="s-iso")
    assert _cached(first) == 0
    _, again = dp2.served_by("alice", prompt, session_id="s-iso")
    assert _cached(again) >= 128  # the same key: cached
    seen: set[str] = set()
    for attempt in range(12):  # bob's fresh sessions are placed by load: find alice's replica
        engine, body = dp2.served_by("bob", prompt, session_id=f"s-bob-{attempt}")
        if engine not in seen:
            assert _cached(body) == 0, (engine, body["usage"])  # alice's identical prompt is not bob's
        seen.add(engine)
        if engine == home:
            break
    assert home in seen


def test_a_priority_request_overtakes_queued_flex_requests(dp2: DP2) -> None:
    """One slot per replica, all on one session's replica: a long flex request runs, three flex
    requests wait, then a priority request arrives; the engine serves it next."""
    finished: list[str] = []

    async def send(c: httpx.AsyncClient, name: str, tier: str, tokens: int, delay: float) -> None:
        await asyncio.sleep(delay)
        body = {
            "messages": [{"role": "user", "content": f"Queue {name}"}],
            "max_tokens": tokens,
            "min_tokens": tokens,
            "ignore_eos": True,
            "session_id": "s-queue",
            "service_tier": tier,
            **GREEDY,
        }
        r = await c.post(dp2.server.v1 + "/chat/completions", json=body, headers=_auth(dp2.keys["bob"]))
        assert r.status_code == 200, r.text
        assert r.json()["service_tier"] == tier
        finished.append(name)

    async def run() -> None:
        async with httpx.AsyncClient(timeout=300) as c:
            await asyncio.gather(
                send(c, "running", "flex", 400, 0.0),
                *(send(c, f"flex-{i}", "flex", 40, 0.5 + 0.1 * i) for i in range(3)),
                send(c, "priority", "priority", 40, 1.2),
            )

    asyncio.run(run())
    assert finished[0] == "running" and finished[1] == "priority", finished


def test_a_replica_killed_mid_stream_ends_streams_and_the_server_exits_for_a_restart(dp2: DP2) -> None:
    """Last in this module (it ends the server). SIGKILL one replica's engine core, as the OOM
    killer or a GPU fault would, under streams on both replicas: every stream ends with an error
    event (never a hang, never a truncated answer that reads as finished), and the server exits
    non-zero within seconds, for the service manager to restart it."""
    import os
    import signal
    import threading

    import psutil

    s = dp2.server
    ends: list[str] = []

    def stream(n: int) -> None:
        # Long enough that no stream can finish before the kill 3 s in: one sequence per replica
        # on the tiny model made 3,000 tokens in under 3 s once (CI), and that answer was whole.
        body = {"prompt": f"Once {n}", "max_tokens": 30000, "min_tokens": 30000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", s.api_v1 + "/completions", json=body, headers=_auth(dp2.keys["alice"]), timeout=120) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
            # A request the server had not started streaming yet (a loaded machine) is refused
            # with an error status instead: also an end that cannot read as a finished answer.
            ends.append(" ".join(lines) if r.status_code == 200 else f'{r.status_code} "error"')

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    procs = psutil.Process(s.process.pid).children(recursive=True)
    cores = sorted((p for p in procs if "EngineCore" in " ".join([*p.cmdline(), p.name()])), key=lambda p: p.name())
    assert len(cores) >= 2, [(p.pid, p.name()) for p in procs]
    killed = time.monotonic()
    os.kill(cores[-1].pid, signal.SIGKILL)  # one of the two replicas
    for t in threads:
        t.join(timeout=60)
    assert len(ends) == 4, ends  # no stream hangs
    # Every one with an error event, on either replica: vLLM aborts the surviving replica's
    # requests as the engine stops, and an abort is not a finished answer.
    assert all('"error"' in e for e in ends), [e[-200:] for e in ends if '"error"' not in e]  # only the bad ones
    code = s.process.wait(timeout=60)
    print(f"\none replica killed: streams ended, the server exited with {code} after {time.monotonic() - killed:.1f} s")
    assert code != 0
