"""What chat and completions share once a request is accepted: the engine stream, keep-alives,
the reasoning split and the usage tally."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from server.engine.base import EngineClient, EngineDelta, EngineError, EngineRequestRejected, GenerationOptions
from server.errors import APIError, bad_request, error_body
from server.gateway.db import utcnow
from server.gateway.stats import RecentStats

if TYPE_CHECKING:
    from server.gateway.gateway import Gateway
from server.hermes.parser import Piece, ReasoningParser, ThinkWatch, reasoning_token_count
from server.hermes.prompt import PromptRenderer
from server.protocol.responses import finish_reason, sse, usage_block
from server.settings import Pricing, Settings


class Tally:
    """Counts what a generation produced; the same numbers feed streamed and collected usage."""

    def __init__(
        self, prompt_tokens: int, token_bytes: Callable[[int], bytes], pricing: Pricing, start_in_reasoning: bool = False
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.token_ids: list[int] = []
        self.cached_tokens: int | None = None
        self.native_finish: str | None = None
        self._token_bytes = token_bytes
        self._pricing = pricing
        self._start_in_reasoning = start_in_reasoning

    def add(self, d: EngineDelta) -> None:
        self.token_ids.extend(d.token_ids)
        if d.num_cached_tokens is not None:
            self.cached_tokens = d.num_cached_tokens
        if d.finished:
            self.native_finish = d.finish_reason

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    def usage(self) -> dict[str, Any]:
        return usage_block(
            self.prompt_tokens,
            self.completion_tokens,
            min(self.cached_tokens or 0, self.prompt_tokens),
            reasoning_token_count(self.token_ids, self._token_bytes, self._start_in_reasoning),
            self._pricing.prompt,
            self._pricing.completion,
        )


class OutputSplitter:
    """Engine text → reasoning / content pieces; reasoning dropped when the caller excluded it."""

    def __init__(self, exclude_reasoning: bool, start_in_reasoning: bool = False) -> None:
        self.parser = ReasoningParser(start_in_reasoning)
        self.exclude = exclude_reasoning

    def _keep(self, pieces: list[Piece]) -> list[Piece]:
        return [p for p in pieces if not (self.exclude and p.kind == "reasoning")]

    def feed(self, text: str) -> list[Piece]:
        return self._keep(self.parser.feed(text)) if text else []

    def finish(self) -> list[Piece]:
        return self._keep(self.parser.finish())


# What is appended when a plain-text thinking budget is spent: Hermes' own layout around the tag.
FORCED_CLOSE = "\n</think>\n\n"
# Opens reasoning when a constrained answer must follow it (see Generation).
OPEN_THINK = "<think>\n"


class Generation:
    """One accepted request on its way through the engine: what chat and completions share.

    Usually one engine request. Two when the server must act at the end of reasoning:
    a plain-text thinking budget is spent (``</think>`` is forced), or a grammar (JSON schema,
    forced tool call) must start only after ``</think>``. Then the first request generates the
    reasoning unconstrained and is aborted where reasoning ends, and a second one continues from
    prompt + output with the grammar (``reasoning_ended=True``). Why not vLLM's in-engine reasoning
    parser: none fits Hermes (the thinking system prompt's literal ``</think>`` fools them, see
    ../shared/reference/vllm.md), and the split works the same for one-token and plain-text tags.
    With prefix caching the second request recomputes nothing it already has."""

    def __init__(
        self,
        engine: EngineClient,
        ids: list[int],
        options: GenerationOptions,
        gen_id: str,
        base: dict[str, Any],
        renderer: PromptRenderer,
        settings: Settings,
        top_n: int = 0,
        exclude_reasoning: bool = False,
        stats: RecentStats | None = None,
        thinking_budget: int | None = None,
        start_in_reasoning: bool = False,
        reasoning: bool = False,
        gateway: Gateway | None = None,
        meta: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.engine, self.options, self.gen_id, self.base = engine, options, gen_id, base
        self.gateway, self.meta, self.timeout = gateway, meta or {}, timeout
        self.tool_calls = 0  # set by the route's parser, for the usage record's finish reason
        self._stop_reason: str | None = None
        self._deadline_cm: asyncio.Timeout | None = None
        self.renderer, self.settings, self.top_n = renderer, settings, top_n
        self.token_bytes = renderer.token_bytes
        self.stats = stats
        # Reasoning on and a grammar to apply: the grammar waits for </think>. The model opens
        # <think> first in thinking mode anyway; prefilling it makes sure there is a reasoning
        # phase to wait for (otherwise the answer would escape the grammar).
        self.constrain_after = reasoning and options.structured is not None
        if self.constrain_after and not start_in_reasoning:
            ids = ids + renderer.encode_text(OPEN_THINK)
            start_in_reasoning = True
        if options.structured is not None and not self.constrain_after:
            options.reasoning_ended = True  # the grammar applies from the first token
        self.ids = ids
        self.start_in_reasoning = start_in_reasoning
        self.tally = Tally(len(ids), self.token_bytes, settings.pricing, start_in_reasoning)
        self.splitter = OutputSplitter(exclude_reasoning, start_in_reasoning)
        self.plain_budget: int | None = None
        if thinking_budget is not None and thinking_budget < options.max_tokens:
            if renderer.think_is_one_token:
                options.thinking_token_budget = thinking_budget  # vLLM's own mechanism
            else:
                self.plain_budget = thinking_budget

    def stop(self, reason: str) -> None:
        """End this generation now (server drain): it raises a 503 that streams turn into the
        mid-stream error chunk, and it is recorded like any other."""
        self._stop_reason = reason
        if self._deadline_cm is not None:
            self._deadline_cm.reschedule(asyncio.get_running_loop().time())

    async def deltas(self) -> AsyncIterator[EngineDelta]:
        """The engine's deltas under the request deadline, timed and recorded: every generation
        that starts leaves a usage record (finished, failed, timed out, cancelled, drained)."""
        loop = asyncio.get_running_loop()
        created = utcnow()
        start = time.monotonic()
        deadline = loop.time() + self.timeout if self.timeout is not None else None
        first: float | None = None
        tokens = 0
        error: str | None = None
        cancelled = client_mistake = False
        two_phase = self.plain_budget is not None or self.constrain_after
        source = self._phased() if two_phase else engine_stream(self.engine, self.ids, self.options, self.gen_id)
        if self.gateway is not None:
            self.gateway.active.add(self)
        try:
            while True:
                if self._stop_reason is not None:
                    raise APIError(503, "Server is shutting down: generation ended early")
                try:
                    async with asyncio.timeout_at(deadline) as cm:
                        self._deadline_cm = cm
                        d = await source.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    if self._stop_reason is not None:
                        raise APIError(503, "Server is shutting down: generation ended early") from exc
                    raise APIError(408, f"Request timed out after {self.timeout:g} s") from exc
                finally:
                    self._deadline_cm = None
                if first is None and d.token_ids:
                    first = time.monotonic()
                tokens += len(d.token_ids)
                yield d
        except (EngineError, APIError) as exc:
            error = str(exc) if isinstance(exc, EngineError) else exc.message
            client_mistake = isinstance(exc, APIError) and exc.status < 500 and exc.status != 408
            raise
        except (GeneratorExit, asyncio.CancelledError):
            cancelled = True
            raise
        finally:
            await source.aclose()  # type: ignore[attr-defined]
            end = time.monotonic()
            if self.gateway is not None:
                self.gateway.active.discard(self)
            ttft = (first - start) if first is not None else None
            if self.stats is not None and not cancelled and not client_mistake:
                self.stats.record(error is None, ttft, tokens, end - (first or end))
            if self.gateway is not None:
                self.gateway.record(self._record(created, ttft, end - start, error, cancelled))

    def _record(self, created: Any, ttft: float | None, latency: float, error: str | None, cancelled: bool) -> dict[str, Any]:
        u = self.tally.usage()
        native = self.tally.native_finish
        finish = "error" if error else ("cancelled" if cancelled else finish_reason(native, self.tool_calls))
        return {
            "id": self.gen_id,
            "created_at": created,
            "model": self.base.get("model", ""),
            "prompt_tokens": u["prompt_tokens"],
            "completion_tokens": u["completion_tokens"],
            "reasoning_tokens": u["completion_tokens_details"]["reasoning_tokens"],
            "cached_tokens": u["prompt_tokens_details"]["cached_tokens"],
            "cost": u["cost"],
            "latency_ms": round(latency * 1000, 3),
            "ttft_ms": round(ttft * 1000, 3) if ttft is not None else None,
            "finish_reason": finish,
            "native_finish_reason": native,
            "cancelled": cancelled,
            "error": error[:500] if error else None,
            "key_id": self.meta.get("key_id"),
            "route": self.meta.get("route", ""),
            "streamed": bool(self.meta.get("streamed")),
            "referer": self.meta.get("referer"),
            "title": self.meta.get("title"),
        }

    async def _phased(self) -> AsyncIterator[EngineDelta]:
        watch = ThinkWatch(self.plain_budget, self.token_bytes, self.start_in_reasoning, stop_at_close=self.constrain_after)
        first_options = replace(self.options, structured=None) if self.constrain_after else self.options
        out: list[int] = []
        cut: EngineDelta | None = None
        event: str | None = None
        first = engine_stream(self.engine, self.ids, first_options, self.gen_id)
        try:
            async for d in first:
                hit = watch.feed(d.token_ids)
                if hit is None or (hit[0] == "budget" and d.finished and hit[1] == len(d.token_ids)):
                    out.extend(d.token_ids)
                    yield d
                    continue
                event, keep = hit
                kept = d.token_ids[:keep]
                text = d.text if keep == len(d.token_ids) else self.renderer.decode(kept)
                cut = EngineDelta(text, kept, d.logprobs[:keep] if d.logprobs else None, num_cached_tokens=d.num_cached_tokens)
                break
        finally:
            await first.aclose()  # type: ignore[attr-defined]
        if cut is None:
            return
        out.extend(cut.token_ids)
        yield cut
        room = self.options.max_tokens - len(out)
        if event == "budget":
            forced = self.renderer.encode_text(FORCED_CLOSE)[:room]
            out.extend(forced)
            room -= len(forced)
            yield EngineDelta(self.renderer.decode(forced), forced, [] if self.options.logprobs is not None else None)
        if room <= 0:
            yield EngineDelta("", [], finished=True, finish_reason="length")
            return
        rest = replace(self.options, max_tokens=room, thinking_token_budget=None)
        if rest.structured is not None:
            rest.reasoning_ended = True
        async for d in engine_stream(self.engine, self.ids + out, rest, self.gen_id + "-answer"):
            # Its cached prefix is prompt + reasoning, not the caller's prompt: keep the first figure.
            d.num_cached_tokens = None
            yield d


def engine_failure(exc: EngineError) -> APIError:
    return APIError(502, f"The model failed to generate: {exc}")


async def engine_stream(
    engine: EngineClient, ids: list[int], options: GenerationOptions, request_id: str
) -> AsyncIterator[EngineDelta]:
    """Engine deltas; rejected parameters become a 400."""
    agen = engine.generate(ids, options, request_id)
    try:
        async for d in agen:
            yield d
    except EngineRequestRejected as exc:
        raise bad_request(str(exc)) from exc
    finally:
        # Closing the engine's iterator aborts the request if it has not finished (client gone,
        # error, cancellation): its engine slot is freed at once.
        await agen.aclose()  # type: ignore[attr-defined]


async def with_keepalive(source: AsyncIterator[EngineDelta], interval: float) -> AsyncIterator[EngineDelta | None]:
    """Yield the source's items, and None whenever ``interval`` seconds pass without one.

    A pump task fetches the next item only when the consumer asks for it (so while the consumer
    is busy, vLLM keeps merging new tokens into one delta, as it does for its own server), and a
    ticker task puts None in the queue after ``interval`` seconds of silence. The consumer only
    awaits ``queue.get()``: no task or timer per token (an ``asyncio.wait`` with a timeout per
    item cost ~8 % of the API process at 64 streams). Items are never lost or reordered; the
    source's errors reach the consumer in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    want = asyncio.Event()
    last = [loop.time()]

    async def pump() -> None:
        try:
            while True:
                await want.wait()
                want.clear()
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    queue.put_nowait(("end", None))
                    return
                last[0] = loop.time()
                queue.put_nowait(("item", item))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, which re-raises it
            queue.put_nowait(("error", exc))

    async def tick() -> None:
        while True:
            wait = last[0] + interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            last[0] = loop.time()
            queue.put_nowait(("tick", None))

    tasks = [asyncio.create_task(pump()), asyncio.create_task(tick())]
    try:
        want.set()
        while True:
            kind, value = await queue.get()
            if kind == "item":
                yield value
                want.set()
            elif kind == "tick":
                yield None
            elif kind == "end":
                return
            else:
                raise value
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await source.aclose()  # type: ignore[attr-defined]


def midstream_error(exc: EngineError | APIError, base: dict[str, Any], obj: str, empty_choice: dict[str, Any]) -> str:
    """OpenRouter's in-band error once a stream's headers are sent: an ``error`` object and a
    choice finishing with ``error`` (HTTP status stays 200)."""
    err = exc if isinstance(exc, APIError) else engine_failure(exc)
    payload = {**base, "object": obj, **error_body(err.status, err.message)}
    payload["choices"] = [{"index": 0, **empty_choice, "finish_reason": "error", "native_finish_reason": "error"}]
    return sse(payload)
