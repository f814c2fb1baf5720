"""Runs a plan: the engine deltas under the request deadline, turned into events, with
keep-alives, drain, client-disconnect abort and the usage record, once for every API.

The path every API takes: ``core.plan(task)`` → ``await core.open(plan)`` (reserves the credit)
→ ``generation.stream(encoder)`` or ``await generation.replay(encoder)`` (the non-streamed answer
is the same events through the same encoder)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeVar

from server.engine.base import EngineClient, EngineError
from server.errors import APIError
from server.hermes.prompt import PromptRenderer
from server.serving.affinity import ReplicaRouter, Route
from server.serving.encode import Collected, Collector, Encoder, walk
from server.serving.engine_source import plan_deltas
from server.serving.events import Batch, Failure, Finish, Logprobs, Usage
from server.serving.output import OutputRouter
from server.serving.plan import GenerationPlan
from server.serving.planning import PlanDefaults, plan_task
from server.serving.record import GenerationObserver, UsageRecord
from server.serving.spans import end_generation
from server.serving.sse import SSEResponse, sse_response
from server.serving.tally import Tally
from server.settings import Pricing, SamplingDefaults
from server.task import Task
from server.timeutil import utcnow
from server.tracing import NO_TRACE

T = TypeVar("T")

# OpenRouter normalises finish reasons; the engine's own word goes to native_finish_reason.
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "error": "error"}


def finish_reason(native: str | None, tool_calls: int = 0) -> str | None:
    """OpenRouter's finish reason: ``tool_calls`` when a turn that stopped made calls."""
    if tool_calls and native == "stop":
        return "tool_calls"
    return None if native is None else _FINISH.get(native, native)


def engine_failure(exc: EngineError) -> APIError:
    return APIError(502, f"The model failed to generate: {exc}")


class ServingCore:
    def __init__(
        self,
        engine: EngineClient,
        renderer: PromptRenderer,
        *,
        pricing: Pricing,
        keepalive_seconds: float,
        timeout_seconds: float | None,
        observer: GenerationObserver | None = None,
        defaults: PlanDefaults | None = None,
        router: ReplicaRouter | None = None,
        batch_pricing: Pricing | None = None,
    ) -> None:
        """``router``: places each generation on a data-parallel replica (None: one replica, or
        the engine's own balancer)."""
        self.engine, self.renderer, self.observer = engine, renderer, observer
        self.pricing = pricing
        self.batch_pricing = batch_pricing if batch_pricing is not None else pricing
        self.router = router
        self.keepalive_seconds = keepalive_seconds
        self.timeout_seconds = timeout_seconds
        self.defaults = defaults if defaults is not None else PlanDefaults(SamplingDefaults())

    def pricing_of(self, plan: GenerationPlan) -> Pricing:
        """The prices a plan is charged at: a batch's are discounted."""
        return self.batch_pricing if plan.info.batch_id is not None else self.pricing

    async def plan(self, task: Task) -> GenerationPlan:
        """The task's plan (400 for what cannot be generated); reserves nothing."""
        with (task.info.trace or NO_TRACE).span("plan") as span:
            plan = await plan_task(self.renderer, self.engine.max_model_len, self.defaults, task)
            span.set_attribute("gen_ai.usage.input_tokens", len(plan.prompt_ids))
            return plan

    async def open(self, plan: GenerationPlan) -> Generation:
        """The plan's generation, ready to stream or collect, once the observer has reserved what
        it may cost (the key's credit: a 402 raised here, before any response is started). The
        only way to a generation, so no adapter can skip the reservation."""
        if self.observer is not None:
            await self.observer.reserve(plan)
        return Generation(self, plan)


class Generation:
    """One plan on its way through the engine; stoppable by the drain."""

    def __init__(self, core: ServingCore, plan: GenerationPlan) -> None:
        self.core, self.plan = core, plan
        self._stop_reason: str | None = None
        self._deadline: _Deadline | None = None

    def events(self) -> AsyncIterator[Batch]:
        """The event batches, as the engine makes them."""
        return self._batches()

    def stream(self, enc: Encoder[T]) -> AsyncIterator[T]:
        """The stream, through the API's encoder."""
        return walk(self._batches(), enc)

    def sse(self, frames: AsyncIterator[bytes], headers: dict[str, str], keepalive: bytes, first: bool = True) -> SSEResponse:
        """The stream's frames as the HTTP response, with ``keepalive`` (the API's own keep-alive
        frame) written during silences, and at once when ``first`` (see ``serving/sse.py``)."""
        return sse_response(frames, headers, keepalive, self.core.keepalive_seconds, first)

    async def replay(self, enc: Encoder[object], gone: Awaitable[None] | None = None) -> None:
        """The whole answer through the API's encoder (its output is not sent: the encoder keeps
        what its body needs); a failure is raised as its APIError. ``gone``: resolves when the
        client has disconnected; the generation then stops at once (the engine request is
        aborted and recorded as cancelled) instead of running on for nobody."""
        if gone is None:
            await self._replay(enc)
            return
        run, watch = asyncio.ensure_future(self._replay(enc)), asyncio.ensure_future(gone)
        try:
            await asyncio.wait({run, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
                raise APIError(499, "Client closed the request")
            run.result()
        finally:
            watch.cancel()

    async def _replay(self, enc: Encoder[object]) -> None:
        # aclosing: a failure raised from here closes the run first, so its record is made now
        # rather than whenever the suspended generator is collected.
        async with contextlib.aclosing(self._batches()) as batches:
            async for _ in walk(batches, enc, raise_failure=True):
                pass

    async def collect(self, gone: Awaitable[None] | None = None) -> Collected:
        """The whole answer, gathered (``gone``: as for :meth:`replay`)."""
        collector = Collector()
        await self.replay(collector, gone)
        return collector.result()

    def stop(self, reason: str) -> None:
        """End this generation now (server drain): it fails with a 503, sent in-band on streams,
        and is recorded like any other."""
        self._stop_reason = reason
        if self._deadline is not None:
            self._deadline.fire()

    def _stopped(self) -> APIError:
        return APIError(503, "Server is shutting down: generation ended early")

    async def _batches(self) -> AsyncGenerator[Batch, None]:
        core, plan = self.core, self.plan
        loop = asyncio.get_running_loop()
        created, start = utcnow(), time.monotonic()
        timeout = core.timeout_seconds
        deadline = self._deadline = _Deadline(loop, loop.time() + timeout if timeout is not None else None)
        router = OutputRouter(plan.output)
        tally = Tally(len(plan.prompt_ids), core.renderer.token_bytes, plan.output.start_in_reasoning)
        failure: APIError | None = None
        usage: Usage | None = None  # counted once at the end (reasoning tokens scan every token)
        cancelled = False
        route: Route | None = None
        if core.router is not None:
            info = plan.info
            route = core.router.route(core.router.key_for(plan.prompt_ids, info.session_id, plan.options.cache_salt))
        source = plan_deltas(core.engine, core.renderer, plan, route.replica if route is not None else None)
        rt = plan.info.trace or NO_TRACE
        span = rt.start_child("generate", {"gen_ai.response.id": plan.info.gen_id, "gen_ai.request.model": plan.info.model})
        if core.observer is not None:
            core.observer.started(self)
        try:
            while True:
                if self._stop_reason is not None:
                    raise self._stopped()
                try:
                    d = await deadline.next(source)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    if self._stop_reason is not None:
                        raise self._stopped() from exc
                    raise APIError(408, f"Request timed out after {timeout:g} s") from exc
                tally.add(d)
                batch = router.feed(d.text)  # a fresh list of pieces
                if d.logprobs is not None:
                    batch.insert(0, Logprobs(d.logprobs))
                if batch:
                    yield batch
            if tally.native_finish == "abort":
                # The engine ended it, not the model and not us (our aborts close the stream
                # instead): vLLM aborts a replica's requests when another replica dies and the
                # engine shuts down. A truncated answer must not read as a finished one.
                raise EngineError("the engine ended the request before it finished (it is shutting down)")
            end = router.finish()
            stop_sequence = tally.stop_reason if isinstance(tally.stop_reason, str) else None
            reason = finish_reason(tally.native_finish, router.tool_calls) or "stop"
            end.append(Finish(reason, tally.native_finish or reason, stop_sequence))
            usage = tally.usage(core.pricing_of(plan))
            end.append(usage)
            yield end
        except (EngineError, APIError) as exc:
            failure = engine_failure(exc) if isinstance(exc, EngineError) else exc
            yield [Failure(failure)]
        except (GeneratorExit, asyncio.CancelledError):
            cancelled = True
            raise
        finally:
            deadline.close()
            await source.aclose()  # type: ignore[attr-defined]
            if route is not None:
                assert core.router is not None
                core.router.release(route.replica)
            if core.observer is not None:
                u = usage if usage is not None else tally.usage(core.pricing_of(plan))  # failed or cancelled: what was made
                record = self._record(created, start, tally, u, router, failure, cancelled, route)
                core.observer.finished(self, record)
                end_generation(rt, span, record, tally.timing, tally.first_token_at)
            else:
                span.end()

    def _record(
        self,
        created: dt.datetime,
        start: float,
        tally: Tally,
        u: Usage,
        router: OutputRouter,
        failure: APIError | None,
        cancelled: bool,
        route: Route | None,
    ) -> UsageRecord:
        info = self.plan.info
        end = time.monotonic()
        ttft = tally.first_token_at - start if tally.first_token_at is not None else None
        finish = "error" if failure else ("cancelled" if cancelled else finish_reason(tally.native_finish, router.tool_calls))
        return UsageRecord(
            id=info.gen_id,
            created_at=created,
            model=info.model,
            route=info.route,
            api=info.api,
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            reasoning_tokens=u.reasoning_tokens,
            cached_tokens=u.cached_tokens,
            cost=u.cost,
            cache_discount=u.cache_discount,
            latency_ms=round((end - start) * 1000, 3),
            ttft_ms=round(ttft * 1000, 3) if ttft is not None else None,
            finish_reason=finish,
            native_finish_reason=tally.native_finish,
            streamed=info.streamed,
            cancelled=cancelled,
            error=failure.message[:500] if failure else None,
            key_id=info.key_id,
            referer=info.referer,
            title=info.title,
            external_user=info.user,
            user_agent=info.user_agent,
            session_id=info.session_id,
            service_tier=self.plan.service_tier,
            variant=info.variant,
            batch_id=info.batch_id,
            replica=route.replica if route is not None else None,
            route_reason=route.reason if route is not None else None,
            client_mistake=failure is not None and failure.client_mistake,
        )


class _Deadline:
    """One timer per generation that interrupts its wait for the engine when the request's time
    is up, or when the drain ends it (``fire``). What ``asyncio.timeout`` does, but armed once per
    generation: a timeout context around every delta's wait cost ~5 % of the API process's CPU
    at 64 streams (a timer scheduled and cancelled per token)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float | None) -> None:
        self.expired = False
        self._waiting: asyncio.Task[Any] | None = None  # the task awaiting the engine, if one is
        self._timer = loop.call_at(when, self.fire) if when is not None else None

    def fire(self) -> None:
        self.expired = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def next(self, source: AsyncIterator[T]) -> T:
        """The source's next item; TimeoutError once the deadline has passed."""
        if self.expired:
            raise TimeoutError
        task = self._waiting = asyncio.current_task()
        try:
            return await source.__anext__()
        except asyncio.CancelledError:
            assert task is not None
            if self.expired and task.uncancel() == 0:  # ours, not a client's disconnect
                raise TimeoutError from None
            raise
        finally:
            self._waiting = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
