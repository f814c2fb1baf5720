"""The operator gateway against the real server, a real SQLite file and the real engine: keys,
limits, usage records, backpressure under load, timeouts, disconnects, restarts, SIGTERM drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, RunningServer, start_server, stop_server

MODEL = "nousresearch/hermes-4-70b"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20, "temperature": 0}


def _env(db: Path, **extra: str) -> dict[str, str]:
    return {"HERMES_DATABASE_URL": f"sqlite:///{db}", "HERMES_AUTH_REQUIRED": "1", **extra}


def _key(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "server.cli", "keys", "create", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Gw:
    def __init__(self, server: RunningServer, env: dict[str, str], keys: dict[str, str], tmp: Path) -> None:
        self.server, self.env, self.keys, self.tmp = server, env, keys, tmp


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("gateway")
    env = _env(
        tmp / "hermes.db",
        HERMES_GATEWAY__MAX_IN_FLIGHT="4",
        HERMES_GATEWAY__MAX_QUEUE="4",
        HERMES_GATEWAY__REQUEST_TIMEOUT_SECONDS="4",
        HERMES_RESPONSES__STORE="true",  # the restart test keeps a stored response across it
    )
    keys = {
        "plain": _key(env, "--label", "plain"),
        "other": _key(env, "--label", "other"),
        "rpm": _key(env, "--label", "rpm", "--rpm", "2"),
        "tpm": _key(env, "--label", "tpm", "--tpm", "50"),
        "credit": _key(env, "--label", "credit", "--credit-limit", "0.00002"),
        "counter": _key(env, "--label", "counter", "--credit-limit", "0.05"),
    }
    server = start_server(tmp, "gateway", env=env)
    g = Gw(server, env, keys, tmp)
    yield g
    stop_server(g.server)


def _chat(gw: Gw, key: str, **kw) -> httpx.Response:
    return httpx.post(gw.server.v1 + "/chat/completions", json={**BODY, **kw}, headers=_auth(gw.keys[key]), timeout=120)


def _record(gw: Gw, gen_id: str, key: str = "plain") -> httpx.Response:
    return httpx.get(gw.server.api_v1 + "/generation", params={"id": gen_id}, headers=_auth(gw.keys[key]), timeout=30)


def test_keys_required(gw: Gw) -> None:
    url = gw.server.v1 + "/chat/completions"
    missing = httpx.post(url, json=BODY, timeout=30)
    assert missing.status_code == 401 and missing.json() == {"error": {"code": 401, "message": "No auth credentials found"}}
    wrong = httpx.post(url, json=BODY, headers=_auth("sk-hermes-wrong"), timeout=30)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == 401
    assert httpx.get(gw.server.v1 + "/models", timeout=30).status_code == 200  # as at OpenRouter (a setting may require keys)
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(gw.server.url + path, timeout=30).status_code == 200
    assert _chat(gw, "plain").status_code == 200


def test_responses_and_messages_share_keys_and_usage_records(gw: Gw) -> None:
    """The Responses and Anthropic adapters go through the same gateway: keys (Anthropic's
    x-api-key too, and its 401 shape), and a usage record per generation with its API type."""
    import anthropic
    from openai import OpenAI

    key = gw.keys["plain"]
    sdk = anthropic.Anthropic(base_url=gw.server.url, api_key=key, max_retries=0, timeout=120)
    raw = sdk.messages.with_raw_response.create(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert raw.parse().content is not None
    with pytest.raises(anthropic.AuthenticationError) as refused:
        anthropic.Anthropic(base_url=gw.server.url, api_key="sk-hermes-wrong", max_retries=0).messages.create(
            model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
        )
    assert refused.value.body == {"type": "error", "error": {"type": "authentication_error", "message": "User not found."}}
    openai_raw = OpenAI(base_url=gw.server.v1, api_key=key, max_retries=0, timeout=120).responses.with_raw_response.create(
        model=MODEL, input="Hi", max_output_tokens=4
    )
    for response, api in ((raw, "messages"), (openai_raw, "responses")):
        gen_id = response.headers["X-Generation-Id"]
        record = _record(gw, gen_id)
        assert record.status_code == 200 and record.json()["data"]["api_type"] == api
        assert _record(gw, gen_id, "other").status_code == 404


def test_counting_tokens_holds_no_credit(gw: Gw) -> None:
    """count_tokens plans a request and never generates: it holds nothing against the key's credit.
    Each count below would hold $0.04 (100,000 output tokens at $0.40/M) if it did, so the second
    of two on a $0.05 key would be refused with 402."""
    import anthropic

    sdk = anthropic.Anthropic(base_url=gw.server.url, api_key=gw.keys["counter"], max_retries=0, timeout=120)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count me"}]}
    counts = [sdk.messages.count_tokens(**body, extra_body={"max_tokens": 100_000}).input_tokens for _ in range(2)]
    assert counts[0] == counts[1] > 0
    info = httpx.get(gw.server.api_v1 + "/key", headers=_auth(gw.keys["counter"]), timeout=30).json()["data"]
    assert info["limit_remaining"] == 0.05 and info["usage"] == 0
    assert sdk.messages.create(**body, max_tokens=4).usage.input_tokens == counts[0]  # a generation still holds and spends


def test_revoked_key_stops_working(gw: Gw) -> None:
    key = _key(gw.env, "--label", "short-lived")
    assert httpx.get(gw.server.api_v1 + "/key", headers=_auth(key), timeout=30).status_code == 200
    listing = subprocess.run(
        [sys.executable, "-m", "server.cli", "keys", "list"],
        env={**os.environ, **gw.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert key not in listing.stdout and "short-lived" in listing.stdout  # only a hint is shown
    key_id = next(line.split()[1] for line in listing.stdout.splitlines() if "short-lived" in line)
    subprocess.run(
        [sys.executable, "-m", "server.cli", "keys", "revoke", key_id], env={**os.environ, **gw.env}, cwd=ROOT, check=True
    )
    time.sleep(5.5)  # the server caches key lookups for 5 s
    assert httpx.get(gw.server.api_v1 + "/key", headers=_auth(key), timeout=30).status_code == 401


def test_rate_limits_and_credit(gw: Gw) -> None:
    statuses = [_chat(gw, "rpm") for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    limited = statuses[2]
    assert limited.json()["error"]["code"] == 429 and "2 requests per minute" in limited.json()["error"]["message"]
    assert limited.headers["X-RateLimit-Limit"] == "2" and limited.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(limited.headers["Retry-After"]) <= 60 and int(limited.headers["X-RateLimit-Reset"]) > time.time() * 1000
    assert _chat(gw, "tpm", max_tokens=60).status_code == 200  # prompt + 60 tokens > 50 per minute
    tpm = _chat(gw, "tpm")
    assert tpm.status_code == 429 and "tokens per minute" in tpm.json()["error"]["message"] and "Retry-After" in tpm.headers
    # Credit is held for a request's largest cost first (OpenRouter's rule): without max_tokens
    # that is the whole context, which 20 micro-dollars do not cover.
    unbounded = _chat(gw, "credit", max_tokens=None)
    assert unbounded.status_code == 402 and unbounded.json()["error"]["code"] == 402
    affordable = int(unbounded.json()["error"]["message"].rsplit("can only afford ", 1)[1].rstrip("."))
    assert 0 < affordable < 200
    assert _chat(gw, "credit", max_tokens=affordable, min_tokens=affordable).status_code == 200  # spends it all
    broke = _chat(gw, "credit")
    assert broke.status_code == 402 and broke.json()["error"]["code"] == 402
    info = httpx.get(gw.server.api_v1 + "/key", headers=_auth(gw.keys["credit"]), timeout=30).json()["data"]
    assert info["label"] == "credit" and info["limit"] == 0.00002
    assert 0 <= info["limit_remaining"] < 0.4e-6  # less than one more output token's price
    assert info["usage"] > 0 and info["usage_daily"] == info["usage"] == info["usage_monthly"]
    assert (
        httpx.get(gw.server.api_v1 + "/auth/key", headers=_auth(gw.keys["rpm"]), timeout=30).json()["data"]["rate_limit"][
            "requests"
        ]
        == 2
    )


def test_generation_record_is_the_callers_own(gw: Gw) -> None:
    r = httpx.post(
        gw.server.api_v1 + "/chat/completions",
        json=BODY,
        headers={**_auth(gw.keys["plain"]), "HTTP-Referer": "https://app.example", "X-Title": "Example App"},
        timeout=60,
    )
    gen_id = r.headers["X-Generation-Id"]
    data = _record(gw, gen_id).json()["data"]
    usage = r.json()["usage"]
    assert (
        data["id"] == gen_id
        and data["tokens_prompt"] == usage["prompt_tokens"]
        and data["tokens_completion"] == usage["completion_tokens"]
    )
    assert (
        data["total_cost"] == pytest.approx(usage["cost"])
        and data["finish_reason"] == "length"
        and data["native_finish_reason"] == "length"
    )
    assert data["origin"] == "https://app.example" and data["app_name"] == "Example App" and data["streamed"] is False
    assert data["latency"] is not None and data["generation_time"] is not None
    other = _record(gw, gen_id, key="other")
    assert other.status_code == 404 and other.json()["error"]["code"] == 404


def test_timeout_is_408(gw: Gw) -> None:
    r = _chat(gw, "plain", max_tokens=5000)  # ~20 s on this engine, the limit is 4 s
    assert r.status_code == 408 and "timed out" in r.json()["error"]["message"]
    text = httpx.post(
        gw.server.v1 + "/chat/completions",
        json={**BODY, "max_tokens": 5000, "stream": True},
        headers=_auth(gw.keys["plain"]),
        timeout=60,
    ).text
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert chunks[-1]["error"]["code"] == 408 and chunks[-1]["choices"][0]["finish_reason"] == "error"
    assert text.rstrip().endswith("data: [DONE]")


def test_disconnect_is_recorded_as_cancelled(gw: Gw) -> None:
    with httpx.stream(
        "POST",
        gw.server.v1 + "/chat/completions",
        json={**BODY, "max_tokens": 400, "stream": True},
        headers=_auth(gw.keys["plain"]),
        timeout=60,
    ) as r:
        gen_id = r.headers["X-Generation-Id"]
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: {"):
                seen += 1
            if seen >= 5:
                break
    deadline = time.monotonic() + 15
    while True:
        data = _record(gw, gen_id).json().get("data")
        if (data and data["cancelled"]) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert data["cancelled"] is True and data["streamed"] is True and data["finish_reason"] == "cancelled"
    assert 3 <= data["tokens_completion"] < 400


def test_overload_gives_only_200_and_429(gw: Gw) -> None:
    """40 concurrent requests at a server taking 4 in flight + 4 queued."""

    ready = threading.Barrier(40)

    def one(_: int) -> tuple[int, float]:
        # Clients made first, then all 40 requests sent at once: building 40 httpx clients takes
        # long enough on two cores for the first requests to finish before the last are sent.
        with httpx.Client(timeout=120) as client:
            ready.wait(timeout=60)
            t = time.monotonic()
            body = {**BODY, "max_tokens": 30}
            r = client.post(gw.server.v1 + "/chat/completions", json=body, headers=_auth(gw.keys["plain"]))
        if r.status_code == 429:
            # Retry-After from the service rate seen so far (at least 1 s)
            assert int(r.headers["Retry-After"]) >= 1 and "capacity" in r.json()["error"]["message"]
        return r.status_code, time.monotonic() - t

    start = time.monotonic()
    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(one, range(40)))
    wall = time.monotonic() - start
    counts = Counter(code for code, _ in results)
    slowest = max(t for _, t in results)
    print(f"\noverload: 40 concurrent, capacity 4+4 -> {dict(counts)} in {wall:.1f} s, slowest {slowest:.1f} s")
    assert set(counts) <= {200, 429} and counts[200] >= 8 and counts[429] >= 1
    metrics = httpx.get(gw.server.url + "/metrics", timeout=30).text
    assert 'hermes_rejected_requests_total{reason="capacity"}' in metrics
    assert "hermes_time_to_first_token_seconds_bucket" in metrics and "hermes_requests_in_flight" in metrics


def test_usage_and_stored_responses_survive_a_restart(gw: Gw) -> None:
    """One restart for both: the usage record (and the CLI's report of it), and a Responses
    response stored with store: true (retrieved, continued with previous_response_id, deleted)."""
    from openai import NotFoundError, OpenAI

    greedy = {"temperature": 0, "top_p": 1}
    gen_id = _chat(gw, "plain").headers["X-Generation-Id"]
    sdk = OpenAI(base_url=gw.server.v1, api_key=gw.keys["plain"], max_retries=0, timeout=120)
    first = sdk.responses.create(model=MODEL, input="Remember this", store=True, max_output_tokens=6, **greedy)
    stop_server(gw.server)
    gw.server = start_server(gw.tmp, "gateway-again", env=gw.env)
    data = _record(gw, gen_id).json()["data"]
    assert data["id"] == gen_id and data["tokens_completion"] == 20
    sdk = OpenAI(base_url=gw.server.v1, api_key=gw.keys["plain"], max_retries=0, timeout=120)
    assert sdk.responses.retrieve(first.id).output_text == first.output_text
    follow = sdk.responses.create(model=MODEL, input="And now?", previous_response_id=first.id, max_output_tokens=4, **greedy)
    alone = sdk.responses.create(model=MODEL, input="And now?", max_output_tokens=4, **greedy)
    assert follow.usage.input_tokens >= alone.usage.input_tokens + first.usage.input_tokens - 30  # the history is in the prompt
    sdk.responses.delete(first.id)
    with pytest.raises(NotFoundError):
        sdk.responses.retrieve(first.id)
    out = subprocess.run(
        [sys.executable, "-m", "server.cli", "usage"],
        env={**os.environ, **gw.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "plain" in out and "at OpenRouter" in out


# How the stop signal arrives: to the main process (docker stop, Kubernetes, KillMode=mixed), or
# to the whole process group (Ctrl-C in a terminal, kill -TERM -<pgid>), which vLLM's engine
# processes would get too if the server did not run them in a process group of its own.
# SIGTERM to the group takes the same path as SIGINT to it (the supervisor forwards both alike) and
# is sent in tests/e2e/test_api_processes.py's drain; these two cover the two ways a signal arrives.
SIGNAL_PATHS = {
    "sigterm-main": lambda p: p.send_signal(signal.SIGTERM),
    "sigint-group": lambda p: os.killpg(p.pid, signal.SIGINT),
}


@pytest.mark.parametrize("how", list(SIGNAL_PATHS))
def test_stop_signal_drains_twenty_streams(tmp_path: Path, how: str) -> None:
    # 8 s: long enough for the probes below to land inside the drain even when 20 CPU-engine
    # streams keep the event loop busy (at 3 s a slow /ready probe sometimes outlived the drain),
    # short enough that the 30,000-token streams are still cut.
    env = _env(tmp_path / "drain.db", HERMES_GATEWAY__DRAIN_TIMEOUT_SECONDS="8")
    key = _key(env, "--label", "drain")
    server = start_server(tmp_path, "drain", env=env, own_group=True)
    results: dict[int, tuple[str, str]] = {}
    started = threading.Barrier(21)

    def stream(i: int) -> None:
        # The long ones are forced long (min_tokens): 3,000 tokens sometimes all finished inside
        # the 8 s drain, leaving nothing for it to cut.
        long = {"max_tokens": 30000, "min_tokens": 30000}
        body = {**BODY, **(long if i % 2 else {"max_tokens": 60}), "stream": True}
        with httpx.stream("POST", server.v1 + "/chat/completions", json=body, headers=_auth(key), timeout=120) as r:
            gen_id = r.headers["X-Generation-Id"]
            started.wait()
            parts = []
            for part in r.iter_text():
                parts.append(part)
                # Let the main thread run: twenty readers in a tight loop kept it from sending the
                # probes below until the drain was over (and the port closed).
                time.sleep(0.005)
            results[i] = (gen_id, "".join(parts))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(20)]
    try:
        for t in threads:
            t.start()
        try:
            started.wait(timeout=120)
        except threading.BrokenBarrierError:
            # Said plainly: pytest once crashed formatting this failure, losing the rest of the suite.
            pytest.fail(f"{started.n_waiting} of 20 streams opened within 120 s; server log:\n{server.log_tail()}")
        assert server.process.poll() is None, f"the server exited before the signal:\n{server.log_tail()}"
        SIGNAL_PATHS[how](server.process)
        time.sleep(0.5)
        with server.explained():
            assert httpx.get(server.url + "/ready", timeout=10).status_code == 503
            assert httpx.post(server.v1 + "/chat/completions", json=BODY, headers=_auth(key), timeout=10).status_code == 503
        for t in threads:
            t.join(timeout=120)
        assert server.process.wait(timeout=120) == 0
    finally:  # a failure must not leave the server generating 30,000-token streams for the next tests
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
    assert len(results) == 20
    finished = ended = 0
    for _, text in results.values():
        assert text.rstrip().endswith("data: [DONE]")
        chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
        if "error" in chunks[-1]:
            assert chunks[-1]["error"]["code"] == 503 and chunks[-1]["choices"][0]["finish_reason"] == "error"
            ended += 1
        else:
            assert chunks[-1]["usage"]["completion_tokens"] > 0
            finished += 1
    print(f"\ndrain: {finished} streams finished, {ended} ended with the error chunk after the 8 s drain timeout")
    assert finished >= 10 and ended >= 1  # the short ones finish, the long ones are cut

    from server.gateway.db import Database

    db = Database(env["HERMES_DATABASE_URL"])
    records = [db.record(gen_id) for gen_id, _ in results.values()]
    assert all(r is not None for r in records)
    assert sum(1 for r in records if r is not None and r.error) == ended


def _batch_survives_a_server_stopping(a: RunningServer, b: RunningServer, key: str) -> None:
    """A batch made through the openai SDK on one server is worked by both servers' runners; the
    first server stops mid-batch (SIGTERM: it hands back what it had not finished) and the other
    finishes it: every custom_id answered exactly once, through the real engine."""
    from openai import OpenAI

    lines = [
        json.dumps(
            {
                "custom_id": f"q-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {**BODY, "max_tokens": 48, "min_tokens": 48, "ignore_eos": True},
            }
        )
        for i in range(40)
    ]
    sdk_a = OpenAI(base_url=a.v1, api_key=key, max_retries=0, timeout=60)
    upload = sdk_a.files.create(file=("in.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch")
    batch = sdk_a.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 120
    while sdk_a.batches.retrieve(batch.id).request_counts.completed == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop_server(a)  # mid-batch
    sdk_b = OpenAI(base_url=b.v1, api_key=key, max_retries=0, timeout=60)
    deadline = time.monotonic() + 300
    while (done := sdk_b.batches.retrieve(batch.id)).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert done.status == "completed" and done.request_counts.completed == 40, done
    out = [json.loads(line) for line in sdk_b.files.content(done.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(f"q-{i}" for i in range(40))  # each exactly once
    assert {o["response"]["body"]["usage"]["completion_tokens"] for o in out} == {48}
    # A cancel: what has not started is not run, and says so in the error file.
    upload = sdk_b.files.create(file=("c.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch")
    second = sdk_b.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert sdk_b.batches.cancel(second.id).status == "cancelling"
    deadline = time.monotonic() + 120
    while (ended := sdk_b.batches.retrieve(second.id)).status != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ended.status == "cancelled" and ended.request_counts.completed < 40, ended
    unrun = [json.loads(line) for line in sdk_b.files.content(ended.error_file_id).text.splitlines()]
    assert len(unrun) == 40 - ended.request_counts.completed
    assert {u["error"]["code"] for u in unrun} == {"batch_cancelled"}


def test_two_servers_on_one_postgres_share_keys_limits_and_credit(postgres_url: str, tmp_path: Path) -> None:
    """Two servers (one per node behind a Service, say) on one PostgreSQL database: a key made once
    works on both, its rpm and credit are exact across them, each server serves the other's
    generation records, and a batch outlives one of them stopping."""
    env = {"HERMES_DATABASE_URL": postgres_url, "HERMES_AUTH_REQUIRED": "1"}
    plain = _key(env, "--label", "pg")
    with ThreadPoolExecutor(2) as pool:  # both start at once, as a rollout would
        a, b = pool.map(lambda name: start_server(tmp_path, name, env=env), ["pg-a", "pg-b"])
    try:
        assert httpx.post(a.v1 + "/chat/completions", json=BODY, timeout=30).status_code == 401
        exact = {**BODY, "max_tokens": 10, "min_tokens": 10, "ignore_eos": True}
        with httpx.stream(
            "POST", a.v1 + "/chat/completions", json={**exact, "stream": True}, headers=_auth(plain), timeout=120
        ) as r:
            assert r.status_code == 200
            gen_id = r.headers["X-Generation-Id"]
            last = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")][-1]
        cost = last["usage"]["cost"]  # every request below costs exactly this: same prompt, 10 tokens
        deadline = time.monotonic() + 30
        while True:  # written by server a in a batch; server b reads it from the database
            got = httpx.get(b.api_v1 + "/generation", params={"id": gen_id}, headers=_auth(plain), timeout=30)
            if got.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got.status_code == 200 and got.json()["data"]["tokens_completion"] == 10

        def burst(key: str, n: int) -> Counter[int]:
            def one(i: int) -> int:
                url = (a, b)[i % 2].v1 + "/chat/completions"  # alternate the servers
                return httpx.post(url, json=exact, headers=_auth(key), timeout=120).status_code

            with ThreadPoolExecutor(n) as pool:
                return Counter(pool.map(one, range(n)))

        assert burst(_key(env, "--label", "pg-rpm", "--rpm", "4"), 8) == Counter({200: 4, 429: 4})
        credit_key = _key(env, "--label", "pg-credit", "--credit-limit", f"{cost * 3.5:.12f}")
        assert burst(credit_key, 6) == Counter({200: 3, 402: 3})
        for server in (a, b):  # both report the same spend (once written): the three that ran
            deadline = time.monotonic() + 15
            while True:
                spent = httpx.get(server.api_v1 + "/key", headers=_auth(credit_key), timeout=30).json()["data"]["usage"]
                if spent == pytest.approx(3 * cost, rel=1e-6) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert spent == pytest.approx(3 * cost, rel=1e-6)
        _batch_survives_a_server_stopping(a, b, plain)
    finally:
        for server in (a, b):
            stop_server(server)
    from server.gateway.db import Database

    rec = Database(postgres_url).record(gen_id)
    assert rec is not None and rec.completion_tokens == 10 and rec.streamed
