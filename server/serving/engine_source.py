"""The engine deltas of one plan: one engine request, or two when the server must act where
reasoning ends.

Two requests when a plain-text thinking budget is spent (``</think>`` is forced) or a grammar
(JSON schema, forced tool call) must start only after ``</think>``: the first request generates
the reasoning unconstrained and is aborted where reasoning ends, and a second continues from
prompt + output with the grammar (``reasoning_ended=True``). A model that ends its turn while
still reasoning has its ``</think>`` forced too when a grammar waits, so that a structured answer
always follows. Why not vLLM's in-engine reasoning parsers: none fits Hermes (the thinking system
prompt holds a literal ``</think>``, which they read as "reasoning ended"; docs/VLLM.md), and this
works the same for one-token and plain-text tags. With prefix caching the second request
recomputes nothing it already has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from server.engine.base import EngineClient, EngineDelta, EngineRequestRejected, GenerationOptions
from server.errors import bad_request
from server.hermes.parser import ThinkWatch
from server.hermes.prompt import PromptRenderer
from server.serving.plan import GenerationPlan

# What is appended when a plain-text thinking budget is spent: Hermes' own layout around the tag.
FORCED_CLOSE = "\n</think>\n\n"


async def engine_stream(
    engine: EngineClient, ids: list[int], options: GenerationOptions, request_id: str
) -> AsyncIterator[EngineDelta]:
    """Engine deltas; parameters the engine rejects become a 400."""
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


def plan_deltas(
    engine: EngineClient, renderer: PromptRenderer, plan: GenerationPlan, replica: int | None = None
) -> AsyncIterator[EngineDelta]:
    """``replica``: the data-parallel replica every request of the plan runs on (both phases of
    a two-phase plan share one: the second reuses the first's cache)."""
    ids = list(plan.prompt_ids)
    if replica is not None:
        plan = replace(plan, options=replace(plan.options, replica=replica))
    if plan.two_phase:
        return _phased(engine, renderer, plan, ids)
    return engine_stream(engine, ids, plan.options, plan.info.gen_id)


async def _phased(
    engine: EngineClient, renderer: PromptRenderer, plan: GenerationPlan, ids: list[int]
) -> AsyncIterator[EngineDelta]:
    options = plan.options
    after = plan.grammar_after_reasoning
    watch = ThinkWatch(plan.plain_budget, renderer.token_bytes, plan.output.start_in_reasoning, stop_at_close=after)
    out: list[int] = []
    cut: EngineDelta | None = None
    event: str | None = None
    first = engine_stream(engine, ids, replace(options, structured=None) if after else options, plan.info.gen_id)
    try:
        async for d in first:
            hit: tuple[str, int] | None = watch.feed(d.token_ids)
            if hit is None and after and d.finished and watch.inside and _ends_turn(d):
                # The model ended its turn inside reasoning, before the answer its grammar
                # promises (a structured answer must come): close reasoning as a spent budget
                # does, without the end-of-turn token, and generate the answer.
                hit = ("ended", _before_turn_end(d, renderer))
            if hit is None or (hit[0] == "budget" and d.finished and hit[1] == len(d.token_ids)):
                out.extend(d.token_ids)
                yield d
                continue
            event, keep = hit
            kept = d.token_ids[:keep]
            text = d.text if keep == len(d.token_ids) else renderer.decode(kept)
            cut = EngineDelta(text, kept, d.logprobs[:keep] if d.logprobs else None, num_cached_tokens=d.num_cached_tokens)
            break
    finally:
        await first.aclose()  # type: ignore[attr-defined]
    if cut is None:
        return
    out.extend(cut.token_ids)
    yield cut
    room = options.max_tokens - len(out)
    if event in ("budget", "ended"):
        forced = renderer.encode_text(FORCED_CLOSE)[:room]
        out.extend(forced)
        room -= len(forced)
        yield EngineDelta(renderer.decode(forced), forced, [] if options.logprobs is not None else None)
    if room <= 0:
        yield EngineDelta("", [], finished=True, finish_reason="length")
        return
    rest = replace(options, max_tokens=room, thinking_token_budget=None)
    if rest.structured is not None:
        rest = replace(rest, reasoning_ended=True)
    async for d in engine_stream(engine, ids + out, rest, plan.info.gen_id + "-answer"):
        # Its cached prefix is prompt + reasoning, not the caller's prompt: keep the first figure.
        d.num_cached_tokens = None
        yield d


def _ends_turn(d: EngineDelta) -> bool:
    """The delta ended the output because the model ended its turn (the EOS, or a stop token: only
    the server sets those), not a client's stop string, the token limit or an abort."""
    return d.finish_reason == "stop" and not isinstance(d.stop_reason, str)


def _before_turn_end(d: EngineDelta, renderer: PromptRenderer) -> int:
    """How many of the delta's tokens come before the token that ended the turn: vLLM reports it
    among the output ids, and the answer's prompt must not hold it."""
    end = d.stop_reason if isinstance(d.stop_reason, int) else renderer.tokenizer.eos_token_id
    return len(d.token_ids) - 1 if d.token_ids and d.token_ids[-1] == end else len(d.token_ids)
