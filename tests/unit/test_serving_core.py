"""The serving core on its own (fake engine): plans in, typed events out, one record per run."""

from __future__ import annotations

import asyncio

import pytest

from server.engine.base import GenerationOptions
from server.engine.fake import FakeEngine
from server.hermes.constraints import ToolPlan
from server.hermes.prompt import PromptRenderer
from server.serving.core import ServingCore
from server.serving.events import AnswerText, Failure, Finish, KeepAlive, ReasoningText, ToolCall, Usage
from server.serving.plan import make_plan
from server.serving.record import Stoppable, UsageRecord
from server.settings import Pricing
from server.task import ReasoningPlan, RequestInfo


class Observer:
    def __init__(self) -> None:
        self.running: set[Stoppable] = set()
        self.records: list[UsageRecord] = []

    async def reserve(self, plan) -> None:
        pass

    def started(self, run: Stoppable) -> None:
        self.running.add(run)

    def finished(self, run: Stoppable, record: UsageRecord) -> None:
        self.running.discard(run)
        self.records.append(record)


@pytest.fixture()
def setup(tokenizer):
    engine = FakeEngine(tokenizer)
    observer = Observer()
    renderer = PromptRenderer(tokenizer)
    core = ServingCore(
        engine,
        renderer,
        pricing=Pricing(prompt=1e-6, completion=2e-6),
        keepalive_seconds=10,
        timeout_seconds=5,
        observer=observer,
    )
    return engine, core, observer, renderer


def _plan(renderer: PromptRenderer, reply_tools: bool = False, exclude: bool = False, **options):
    info = RequestInfo(gen_id="gen-test", model="m", api="test", route="/test", streamed=False)
    tools = ToolPlan(offered=None, parse=True, parallel=False, structured=None) if reply_tools else None
    reasoning = ReasoningPlan(enabled=True, exclude=exclude, effort="medium")
    return make_plan(renderer, info, [1, 2, 3], GenerationOptions(max_tokens=64, **options), reasoning=reasoning, tools=tools)


async def _events(core: ServingCore, plan):
    return (await core.open(plan)).events()


async def _collect(core: ServingCore, plan):
    return await (await core.open(plan)).collect()


async def test_collect_orders_pieces_and_counts_usage(setup) -> None:
    engine, core, observer, renderer = setup
    engine.reply = '<think>\nhmm\n</think>\nSure.<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call><tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>'
    out = await (await core.open(_plan(renderer, reply_tools=True))).collect()
    kinds = [type(p) for p in out.pieces]
    assert kinds[0] is ReasoningText and AnswerText in kinds and kinds[-1] is ToolCall
    assert out.reasoning == "hmm" and out.text == "Sure."
    assert [c.name for c in out.tool_calls] == ["f"]  # not parallel: the second call is dropped
    assert out.finish == Finish("tool_calls", "stop", None)
    assert out.usage.completion_tokens == len(engine.tokenizer.encode(engine.reply, add_special_tokens=False))
    assert out.usage.reasoning_tokens > 0 and out.usage.prompt_tokens == 3
    (rec,) = observer.records
    assert rec.finish_reason == "tool_calls" and rec.cost == out.usage.cost and not observer.running


async def test_stream_ends_with_finish_and_usage(setup) -> None:
    engine, core, _, renderer = setup
    engine.reply = "<think>secret</think>Visible answer"
    batches = [b async for b in await _events(core, _plan(renderer, exclude=True, stop=["answer"]))]
    assert not any(isinstance(e, KeepAlive) for b in batches for e in b)  # the SSE writer keeps streams alive
    events = [e for b in batches for e in b]
    assert not any(isinstance(e, ReasoningText) for e in events)  # excluded, still counted
    assert "".join(e.text for e in events if isinstance(e, AnswerText)) == "Visible "
    finish = next(e for e in events if isinstance(e, Finish))
    assert finish.stop_sequence == "answer" and finish.reason == "stop"
    assert isinstance(events[-1], Usage) and events[-1].reasoning_tokens > 0


async def test_failure_is_the_last_event_and_recorded(setup) -> None:
    engine, core, observer, renderer = setup
    engine.fail_after = 2
    events = [e async for b in await _events(core, _plan(renderer)) for e in b]
    assert isinstance(events[-1], Failure) and events[-1].error.status == 502
    assert observer.records[-1].error and observer.records[-1].finish_reason == "error"


async def test_a_request_the_engine_aborts_is_a_failure_not_a_finish(setup) -> None:
    """vLLM ends a surviving replica's requests with "abort" when another replica dies: the
    client must see an error, not a truncated answer that reads as finished."""
    engine, core, observer, renderer = setup
    engine.abort_after = 3
    events = [e async for b in await _events(core, _plan(renderer)) for e in b]
    assert isinstance(events[-1], Failure) and events[-1].error.status == 502
    assert not any(isinstance(e, Finish) for e in events)
    record = observer.records[-1]
    assert record.finish_reason == "error" and "ended the request" in (record.error or "")
    assert record.completion_tokens == 3 and record.native_finish_reason == "abort"


async def test_client_gone_cancels_and_records(setup) -> None:
    engine, core, observer, renderer = setup
    stream = await _events(core, _plan(renderer))
    async for batch in stream:
        if any(isinstance(e, AnswerText) for e in batch):
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert observer.records[-1].cancelled and not engine.running and not observer.running


@pytest.mark.parametrize("streamed", [True, False])
async def test_deadline_ends_a_stalled_engine_with_408(setup, streamed: bool) -> None:
    """One timer per generation interrupts the wait for the engine, in the stream's pump task or
    in the caller's own task, and the caller's task is not left cancelled."""
    engine, core, observer, renderer = setup
    core.timeout_seconds = 0.2
    engine.first_token_delay = 30
    if streamed:
        events = [e async for b in await _events(core, _plan(renderer)) for e in b]
        assert isinstance(events[-1], Failure) and events[-1].error.status == 408
    else:
        with pytest.raises(Exception) as exc:
            await (await core.open(_plan(renderer))).collect()
        assert getattr(exc.value, "status", None) == 408
    assert observer.records[-1].finish_reason == "error" and not engine.running
    await asyncio.sleep(0.01)  # still runnable: the timer's cancellation was taken back


async def test_drain_stop_ends_the_wait_with_503(setup) -> None:
    engine, core, observer, renderer = setup
    engine.first_token_delay = 30
    pending = asyncio.create_task(_collect(core, _plan(renderer)))
    while not observer.running:
        await asyncio.sleep(0.01)
    for run in list(observer.running):
        run.stop("shutdown")
    with pytest.raises(Exception) as exc:
        await asyncio.wait_for(pending, 2)
    assert getattr(exc.value, "status", None) == 503


async def test_a_generation_within_its_deadline_is_untouched(setup) -> None:
    _engine, core, observer, renderer = setup
    core.timeout_seconds = 0.5
    out = await (await core.open(_plan(renderer))).collect()
    assert out.finish.reason == "stop"
    await asyncio.sleep(0.6)  # the timer was cancelled with the generation: nothing fires later
    assert len(observer.records) == 1
