"""Load generator: drives any OpenAI- or OpenRouter-compatible chat endpoint over raw HTTP/SSE.

Why not GuideLLM, AIPerf or `vllm bench serve` underneath (see README, "Load testing"): none of
them interleaves two targets in one run for an A/B comparison, none sends OpenRouter's
`reasoning` object or reads `delta.reasoning` and `: OPENROUTER PROCESSING` comments, and their
error accounting does not separate 429/402/408/503 from mid-stream error chunks, which is what a
gateway is judged on. The measuring core is small (one SSE reader, one scheduler), so it is
written here on httpx; statistics come from numpy, plots from matplotlib.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.constants import OPENROUTER_MODEL_ID


@dataclass(frozen=True)
class Dist:
    """A token-count distribution: ``256`` (fixed), ``uniform:128:512``, ``normal:256:64``, ``exp:256``."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> Dist:
        parts = spec.split(":")
        try:
            if len(parts) == 1:
                return cls("fixed", float(parts[0]))
            kind, *nums = parts
            values = [float(x) for x in nums]
        except ValueError as exc:
            raise ValueError(f"bad distribution {spec!r}: use N, uniform:LO:HI, normal:MEAN:SD or exp:MEAN") from exc
        if kind in ("uniform", "normal") and len(values) == 2:
            return cls(kind, values[0], values[1])
        if kind == "exp" and len(values) == 1:
            return cls(kind, values[0])
        raise ValueError(f"bad distribution {spec!r}: use N, uniform:LO:HI, normal:MEAN:SD or exp:MEAN")

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            v = self.a
        elif self.kind == "uniform":
            v = rng.uniform(self.a, self.b)
        elif self.kind == "normal":
            v = rng.gauss(self.a, self.b)
        else:
            v = rng.expovariate(1 / self.a)
        return max(1, round(v))

    def __str__(self) -> str:
        return {
            "fixed": f"{self.a:g}",
            "uniform": f"uniform:{self.a:g}:{self.b:g}",
            "normal": f"normal:{self.a:g}:{self.b:g}",
        }.get(self.kind, f"exp:{self.a:g}")


@dataclass(frozen=True)
class Target:
    label: str
    url: str  # base URL ending in /v1 or /api/v1
    key: str | None = None
    model: str = OPENROUTER_MODEL_ID


@dataclass(frozen=True)
class Load:
    """``concurrency`` (closed loop: that many requests always in flight) or ``rate`` (open loop:
    Poisson arrivals, requests per second); ``requests`` per phase, capped by ``duration`` s."""

    concurrency: int | None = None
    rate: float | None = None
    requests: int = 100
    duration: float = 300.0

    @property
    def name(self) -> str:
        return f"c={self.concurrency}" if self.concurrency is not None else f"rate={self.rate:g}/s"


@dataclass(frozen=True)
class Mix:
    """Which shipped workload (server/bench/workloads.py) and its options, all filled in."""

    name: str = "plain"
    options: tuple[tuple[str, float | str], ...] = ()

    def option(self, key: str) -> float | str:
        return dict(self.options)[key]


@dataclass(frozen=True)
class Workload:
    mix: Mix = Mix()
    prompt_tokens: Dist = Dist("fixed", 256)
    output_tokens: Dist = Dist("fixed", 128)
    stream: bool = True
    # None: send no reasoning field (the server's default); "off", "on", or an effort level.
    reasoning: str | None = None
    temperature: float = 0.6
    # vLLM's ignore_eos/min_tokens: exact output lengths where the server honours them.
    fixed_output: bool = False
    seed: int = 0
    request_timeout: float = 600.0


@dataclass
class Spec:
    """One request: its messages, max_tokens and the fields its workload adds (reasoning, tools).
    Requests of one ``chain`` (a conversation) go in ``turn`` order, each after the last ended."""

    messages: list[dict[str, Any]]
    max_tokens: int
    fields: dict[str, Any] = field(default_factory=dict)
    chain: int = 0
    turn: int = 0
    tag: str = "plain"  # the kind of request within its workload, for the token statistics
    think: float = 0.0  # seconds its user waits after the previous turn ended before sending it

    @property
    def prompt(self) -> str:
        """The last user message."""
        return str(next(m["content"] for m in reversed(self.messages) if m["role"] == "user"))


@dataclass
class Record:
    target: str
    load: str
    ok: bool
    error: str | None
    start: float
    ttft: float | None
    e2e: float
    itl: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str | None = None
    tag: str = "plain"
    gen_id: str | None = None  # the response id: the server's usage record of this generation
    cached_tokens: int | None = None
    tool_calls: int = 0
    retry_after: float | None = None  # a refusal's Retry-After, in seconds

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first."""
        if self.ttft is None or not self.completion_tokens or self.completion_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.completion_tokens - 1)


def request_body(target: Target, workload: Workload, spec: Spec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": target.model,
        "messages": spec.messages,
        "max_tokens": spec.max_tokens,
        "temperature": workload.temperature,
        "stream": workload.stream,
    }
    if workload.stream:
        body["stream_options"] = {"include_usage": True}
    if workload.reasoning == "off":
        body["reasoning"] = {"enabled": False}
    elif workload.reasoning == "on":
        body["reasoning"] = {"enabled": True}
    elif workload.reasoning:
        body["reasoning"] = {"effort": workload.reasoning}
    body.update(spec.fields)
    # A forced tool call's grammar ends with the call: min_tokens would fight it.
    if workload.fixed_output and "tool_choice" not in spec.fields:
        body["ignore_eos"] = True
        body["min_tokens"] = spec.max_tokens
    return body


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    if isinstance(exc, httpx.TransportError):
        return "disconnect"
    return type(exc).__name__


async def one_request(client: httpx.AsyncClient, target: Target, load: str, workload: Workload, spec: Spec) -> Record:
    headers = {"Content-Type": "application/json"}
    if target.key:
        headers["Authorization"] = f"Bearer {target.key}"
    body = request_body(target, workload, spec)
    start = time.perf_counter()
    rec = Record(target.label, load, ok=False, error=None, start=time.time(), ttft=None, e2e=0.0, tag=spec.tag)
    last: float | None = None
    calls: set[int] = set()
    try:
        async with asyncio.timeout(workload.request_timeout):
            async with client.stream("POST", target.url.rstrip("/") + "/chat/completions", json=body, headers=headers) as r:
                if r.status_code != 200:
                    await r.aread()
                    rec.error = f"http_{r.status_code}"
                    rec.retry_after = _seconds(r.headers.get("retry-after"))
                    return rec
                if not workload.stream:
                    data = json.loads(await r.aread())
                    rec.ttft = time.perf_counter() - start
                    rec.gen_id = data.get("id")
                    _usage(rec, data.get("usage"))
                    choice = (data.get("choices") or [{}])[0]
                    rec.finish_reason = choice.get("finish_reason")
                    rec.tool_calls = len((choice.get("message") or {}).get("tool_calls") or [])
                    rec.ok = True
                    return rec
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue  # blank lines and ": OPENROUTER PROCESSING" comments
                    payload = line[6:]
                    if payload == "[DONE]":
                        break
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        rec.error = f"stream_error_{chunk['error'].get('code', '?')}"
                        return rec
                    rec.gen_id = rec.gen_id or chunk.get("id")
                    if chunk.get("usage"):
                        _usage(rec, chunk["usage"])
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content") or delta.get("reasoning") or delta.get("tool_calls"):
                            now = time.perf_counter()
                            if rec.ttft is None:
                                rec.ttft = now - start
                            elif last is not None:
                                rec.itl.append(now - last)
                            last = now
                        calls.update(tc.get("index", 0) for tc in delta.get("tool_calls") or [])
                        if choice.get("finish_reason"):
                            rec.finish_reason = choice["finish_reason"]
                rec.tool_calls = len(calls)
                rec.ok = rec.ttft is not None or (rec.completion_tokens == 0)
                if not rec.ok:
                    rec.error = "no_output"
    except (httpx.HTTPError, TimeoutError, json.JSONDecodeError) as exc:
        rec.error = "protocol" if isinstance(exc, json.JSONDecodeError) else _error_kind(exc)
    finally:
        rec.e2e = time.perf_counter() - start
    return rec


def _seconds(header: str | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form is not used by the servers measured here."""
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None


def _usage(rec: Record, usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    rec.prompt_tokens = usage.get("prompt_tokens")
    rec.completion_tokens = usage.get("completion_tokens")
    details = usage.get("completion_tokens_details") or {}
    rec.reasoning_tokens = details.get("reasoning_tokens")
    rec.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")


async def run_phase(
    target: Target, load: Load, workload: Workload, specs: list[Spec], on_done: Callable[[Record], None] | None = None
) -> tuple[list[Record], float]:
    """Run one load level against one target; returns the records and the wall time (s).

    Closed loop: each of ``concurrency`` users takes a whole chain (conversation) and sends its
    turns one after another. Open loop: requests arrive as a Poisson process in ``specs`` order; a
    turn whose previous turn has not ended yet waits for it, as its user would."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=2048)
    timeout = httpx.Timeout(workload.request_timeout, connect=30.0)
    records: list[Record] = []
    deadline = time.perf_counter() + load.duration
    specs = specs[: load.requests]
    ended = {(s.chain, s.turn): asyncio.Event() for s in specs}

    async def send(client: httpx.AsyncClient, spec: Spec) -> None:
        before = ended.get((spec.chain, spec.turn - 1))
        if before is not None:
            await before.wait()
        if spec.think:
            await asyncio.sleep(spec.think)
        rec = await one_request(client, target, load.name, workload, spec)
        ended[(spec.chain, spec.turn)].set()
        records.append(rec)
        if on_done:
            on_done(rec)

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()
        if load.concurrency is not None:
            chains: dict[int, list[Spec]] = {}
            for spec in specs:
                chains.setdefault(spec.chain, []).append(spec)
            queue = [sorted(c, key=lambda s: s.turn) for c in reversed(chains.values())]

            async def user() -> None:
                while queue and time.perf_counter() < deadline:
                    for spec in queue.pop():
                        if time.perf_counter() >= deadline:
                            break
                        await send(client, spec)

            await asyncio.gather(*(user() for _ in range(load.concurrency)))
        else:
            assert load.rate is not None
            # A Poisson process conditioned on n arrivals in T = n / rate: the arrival times are n
            # uniform draws on [0, T], sorted. Drawing n exponential gaps instead lets a short
            # phase's realised rate stray far from the one offered (16 gaps: ±25 %).
            rng = random.Random(workload.seed + 7)
            span = len(specs) / load.rate
            arrivals = sorted(rng.uniform(0, span) for _ in specs)
            tasks: list[asyncio.Task[None]] = []
            for spec, at in zip(specs, arrivals, strict=True):
                await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
                if time.perf_counter() >= deadline:
                    break
                tasks.append(asyncio.create_task(send(client, spec)))
            await asyncio.gather(*tasks)
        return records, time.perf_counter() - t0
