"""POST /v1/chat/completions and /api/v1/chat/completions (one handler)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from server.engine.base import EngineError, StructuredOutput, TokenLogprob
from server.errors import APIError, bad_request
from server.generation import Generation, engine_failure, midstream_error, with_keepalive
from server.hermes.params import build_options
from server.hermes.reasoning import plan_reasoning
from server.protocol.requests import ChatRequest
from server.protocol.responses import (
    KEEPALIVE,
    SSE_DONE,
    chat_logprobs,
    normalise_finish,
    reasoning_details,
    sse,
)
from server.routes.common import check_model, engine_of, parse_body, response_base, settings_of, sse_response

router = APIRouter()
log = logging.getLogger("hermes.chat")

# Rendering a very long prompt (tens of thousands of tokens) takes long enough to stall other
# streams; below this many characters it is cheaper to render inline than to hop threads.
_RENDER_INLINE_CHARS = 20_000


def _structured(req: ChatRequest) -> StructuredOutput | None:
    """vLLM-compatible extension ``structured_outputs: {regex | choice | grammar}``: the engine's
    grammar constrains the whole output from the first token."""
    extra = (req.model_extra or {}).get("structured_outputs")
    if extra is None:
        return None
    if not isinstance(extra, dict):
        raise bad_request("structured_outputs must be an object")
    if isinstance(extra.get("regex"), str):
        return StructuredOutput(regex=extra["regex"])
    if isinstance(extra.get("choice"), list) and all(isinstance(c, str) for c in extra["choice"]):
        return StructuredOutput(regex="|".join(_regex_escape(c) for c in extra["choice"]))
    if isinstance(extra.get("grammar"), str):
        return StructuredOutput(grammar=extra["grammar"])
    raise bad_request("structured_outputs needs one of regex (string), choice (list of strings), grammar (string)")


def _regex_escape(text: str) -> str:
    return "".join("\\" + ch if ch in r".^$*+?{}[]\|()" else ch for ch in text)


@router.post("/v1/chat/completions")
@router.post("/api/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    req = await parse_body(request, ChatRequest)
    settings = settings_of(request)
    model = check_model(request, req.model)
    plan = plan_reasoning(req, settings.reasoning.default_enabled)
    engine, renderer = engine_of(request)

    messages = [m.model_dump(exclude_none=True, by_alias=True) for m in req.messages]
    size = sum(len(str(m.get("content") or "")) for m in messages)

    def render() -> Any:
        return renderer.render_chat(messages, thinking=plan.enabled, keep_cots=settings.reasoning.keep_cots)

    prompt = await asyncio.to_thread(render) if size > _RENDER_INLINE_CHARS else render()

    top_n = req.top_logprobs or 0
    options = build_options(
        req,
        requested_max_tokens=req.max_completion_tokens or req.max_tokens,
        prompt_tokens=len(prompt.token_ids),
        max_model_len=engine.max_model_len,
        defaults=settings.sampling,
        stop_token_ids=renderer.stop_token_ids,
        vocab_size=renderer.vocab_size,
        logprobs=top_n if req.logprobs else None,
    )
    options.structured = _structured(req)
    if options.structured is not None:
        options.reasoning_ended = True
    gen_id, base, headers = response_base(request, model)
    gen = Generation(
        engine,
        prompt.token_ids,
        options,
        gen_id,
        base,
        renderer,
        settings,
        top_n=top_n,
        exclude_reasoning=plan.exclude,
        stats=request.app.state.stats,
        thinking_budget=plan.budget(options.max_tokens),
        start_in_reasoning=prompt.opens_reasoning,
    )
    if req.stream:
        return sse_response(_stream(gen), headers)
    return JSONResponse(await _collect(gen, bool(req.logprobs)), headers=headers)


async def _collect(gen: Generation, want_logprobs: bool) -> dict[str, Any]:
    reasoning: list[str] = []
    content: list[str] = []
    logprobs: list[TokenLogprob] = []
    try:
        async for d in gen.deltas():
            gen.tally.add(d)
            for p in gen.splitter.feed(d.text):
                (reasoning if p.kind == "reasoning" else content).append(p.text)
            logprobs.extend(d.logprobs or [])
    except EngineError as exc:
        raise engine_failure(exc) from exc
    for p in gen.splitter.finish():
        (reasoning if p.kind == "reasoning" else content).append(p.text)
    reasoning_text = "".join(reasoning)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(content),
        "refusal": None,
        "reasoning": reasoning_text or None,
    }
    if reasoning_text:
        message["reasoning_details"] = reasoning_details(reasoning_text)
    return {
        **gen.base,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": normalise_finish(gen.tally.native_finish),
                "native_finish_reason": gen.tally.native_finish,
                "logprobs": chat_logprobs(logprobs, gen.top_n, gen.token_bytes) if want_logprobs else None,
            }
        ],
        "usage": gen.tally.usage(),
    }


async def _stream(gen: Generation) -> AsyncIterator[str]:
    base = gen.base

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> str:
        return sse(
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "finish_reason": normalise_finish(finish),
                        "native_finish_reason": finish,
                        "logprobs": logprobs,
                    }
                ],
            }
        )

    def deltas(pieces: list[Any]) -> list[dict[str, Any]]:
        out = []
        for p in pieces:
            if p.kind == "reasoning":
                out.append(
                    {"role": "assistant", "content": "", "reasoning": p.text, "reasoning_details": reasoning_details(p.text)}
                )
            else:
                out.append({"role": "assistant", "content": p.text})
        return out

    yield KEEPALIVE
    try:
        async for d in with_keepalive(gen.deltas(), gen.settings.stream_keepalive_seconds):
            if d is None:
                yield KEEPALIVE
                continue
            gen.tally.add(d)
            lp = chat_logprobs(d.logprobs, gen.top_n, gen.token_bytes) if d.logprobs is not None else None
            out = deltas(gen.splitter.feed(d.text))
            if lp is not None and not out:
                out = [{"role": "assistant", "content": ""}]
            for i, delta in enumerate(out):
                yield chunk(delta, logprobs=lp if i == 0 else None)
        for delta in deltas(gen.splitter.finish()):
            yield chunk(delta)
        yield chunk({"role": "assistant", "content": ""}, finish=gen.tally.native_finish)
        yield sse({**base, "object": "chat.completion.chunk", "choices": [], "usage": gen.tally.usage()})
        yield SSE_DONE
    except (EngineError, APIError) as exc:
        yield midstream_error(exc, base, "chat.completion.chunk", {"delta": {"content": ""}})
        yield SSE_DONE
