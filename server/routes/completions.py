"""POST /v1/completions and /api/v1/completions (legacy prompt API).

The prompt is sent to the model as is (no template). When the request carries a reasoning field
(``reasoning``, ``reasoning_effort``, ``include_reasoning``) or the prompt ends inside an open
``<think>``, the output is split like chat: ``<think>…</think>`` goes to the choice's
``reasoning``, the rest to ``text``, and the thinking budget applies. Otherwise ``text`` is the
raw output, so prompt-completion tools (evaluation harnesses, logprob scoring) see every byte.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from server.engine.base import EngineError, TokenLogprob
from server.errors import APIError
from server.generation import Generation, engine_failure, midstream_error
from server.hermes.params import build_options
from server.hermes.parser import ends_inside_reasoning
from server.hermes.reasoning import plan_reasoning
from server.protocol.requests import CompletionRequest
from server.protocol.responses import SSE_DONE, completion_logprobs, normalise_finish, sse
from server.routes.common import check_model, engine_of, gateway_context, parse_body, response_base, settings_of, sse_response

router = APIRouter()


@router.post("/v1/completions")
@router.post("/api/v1/completions")
async def completions(request: Request) -> Any:
    req = await parse_body(request, CompletionRequest)
    settings = settings_of(request)
    model = check_model(request, req.model)
    # The prompt is the caller's own: the profile's reasoning default cannot change it.
    plan = plan_reasoning(req, default_enabled=False)
    inside = ends_inside_reasoning(req.prompt_text)
    split = inside or req.reasoning is not None or req.reasoning_effort is not None or req.include_reasoning is not None
    engine, renderer = engine_of(request)
    ids = renderer.encode_prompt(req.prompt_text)
    options = build_options(
        req,
        requested_max_tokens=req.max_tokens,
        prompt_tokens=len(ids),
        max_model_len=engine.max_model_len,
        defaults=settings.sampling,
        stop_token_ids=renderer.stop_token_ids,
        vocab_size=renderer.vocab_size,
        logprobs=req.logprobs,
    )
    gen_id, base, headers = response_base(request, model)
    gen = Generation(
        engine,
        ids,
        options,
        gen_id,
        base,
        renderer,
        settings,
        top_n=req.logprobs or 0,
        exclude_reasoning=plan.exclude,
        **gateway_context(request, req.stream),
        thinking_budget=plan.budget(options.max_tokens),
        start_in_reasoning=inside,
    )
    want_logprobs = req.logprobs is not None
    if req.stream:
        return sse_response(_stream(gen, want_logprobs, split), headers)
    texts: list[str] = []
    reasoning: list[str] = []
    logprobs: list[TokenLogprob] = []
    try:
        async for d in gen.deltas():
            gen.tally.add(d)
            if split:
                for p in gen.splitter.feed(d.text):
                    (reasoning if p.kind == "reasoning" else texts).append(p.text)
            else:
                texts.append(d.text)
            logprobs.extend(d.logprobs or [])
    except EngineError as exc:
        raise engine_failure(exc) from exc
    for p in gen.splitter.finish() if split else []:
        (reasoning if p.kind == "reasoning" else texts).append(p.text)
    choice = {
        "index": 0,
        "text": "".join(texts),
        "finish_reason": normalise_finish(gen.tally.native_finish),
        "native_finish_reason": gen.tally.native_finish,
        "logprobs": completion_logprobs(logprobs, gen.top_n, 0) if want_logprobs else None,
        "reasoning": "".join(reasoning) or None,
    }
    return JSONResponse({**base, "object": "text_completion", "choices": [choice], "usage": gen.tally.usage()}, headers=headers)


async def _stream(gen: Generation, want_logprobs: bool, split: bool) -> AsyncIterator[str]:
    offset = 0

    def chunk(text: str, finish: str | None = None, logprobs: Any = None, reasoning: str | None = None) -> str:
        choice = {
            "index": 0,
            "text": text,
            "finish_reason": normalise_finish(finish),
            "native_finish_reason": finish,
            "logprobs": logprobs,
            "reasoning": reasoning,
        }
        return sse({**gen.base, "object": "text_completion", "choices": [choice]})

    def pieces(text: str, final: bool = False) -> list[tuple[str, str | None]]:
        if not split:
            return [(text, None)] if text else []
        got = gen.splitter.finish() if final else gen.splitter.feed(text)
        return [("", p.text) if p.kind == "reasoning" else (p.text, None) for p in got]

    try:
        async for d in gen.deltas():
            gen.tally.add(d)
            lp = completion_logprobs(d.logprobs or [], gen.top_n, offset) if want_logprobs else None
            offset += len(d.text)
            out = pieces(d.text)
            if lp and not out:
                out = [("", None)]
            for i, (text, reasoning) in enumerate(out):
                yield chunk(text, logprobs=lp if i == 0 else None, reasoning=reasoning)
        for text, reasoning in pieces("", final=True):
            yield chunk(text, reasoning=reasoning)
        yield chunk("", finish=gen.tally.native_finish)
        yield sse({**gen.base, "object": "text_completion", "choices": [], "usage": gen.tally.usage()})
        yield SSE_DONE
    except (EngineError, APIError) as exc:
        yield midstream_error(exc, gen.base, "text_completion", {"text": ""})
        yield SSE_DONE
