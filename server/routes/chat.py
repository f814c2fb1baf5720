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
from server.hermes.constraints import ToolPlan, plan_tools, response_format_constraint
from server.hermes.params import build_options
from server.hermes.parser import Piece
from server.hermes.reasoning import plan_reasoning
from server.hermes.tools import ParsedCall, Text, ToolCallParser
from server.protocol.requests import ChatRequest
from server.protocol.responses import (
    KEEPALIVE,
    SSE_DONE,
    chat_logprobs,
    normalise_finish,
    reasoning_details,
    sse,
)
from server.routes.common import check_model, engine_of, gateway_context, parse_body, response_base, settings_of, sse_response

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
    tools = plan_tools(req)
    whole = _structured(req)  # the extension constrains the whole output, reasoning included
    structured = whole or tools.structured or response_format_constraint(req.response_format)
    engine, renderer = engine_of(request)

    messages = [m.model_dump(exclude_none=True, by_alias=True) for m in req.messages]
    size = sum(len(str(m.get("content") or "")) for m in messages)

    def render() -> Any:
        return renderer.render_chat(messages, tools=tools.offered, thinking=plan.enabled, keep_cots=settings.reasoning.keep_cots)

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
    options.structured = structured
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
        **gateway_context(request, req.stream),
        thinking_budget=plan.budget(options.max_tokens),
        start_in_reasoning=prompt.opens_reasoning,
        reasoning=plan.enabled and whole is None,
    )
    if req.stream:
        return sse_response(_stream(gen, tools), headers)
    return JSONResponse(await _collect(gen, tools, bool(req.logprobs)), headers=headers)


def _finish(native: str | None, calls: int) -> str | None:
    return "tool_calls" if calls and native == "stop" else normalise_finish(native)


async def _collect(gen: Generation, tools: ToolPlan, want_logprobs: bool) -> dict[str, Any]:
    reasoning: list[str] = []
    content: list[str] = []
    calls: list[ParsedCall] = []
    logprobs: list[TokenLogprob] = []
    parser = ToolCallParser() if tools.parse else None

    def take(pieces: list[Piece]) -> None:
        for p in pieces:
            if p.kind == "reasoning":
                reasoning.append(p.text)
            elif parser is None:
                content.append(p.text)
            else:
                sort(parser.feed(p.text))

    def sort(items: list[Text | ParsedCall]) -> None:
        for it in items:
            if isinstance(it, Text):
                content.append(it.text)
            elif tools.parallel or not calls:
                calls.append(it)
                gen.tool_calls += 1

    try:
        async for d in gen.deltas():
            gen.tally.add(d)
            take(gen.splitter.feed(d.text))
            logprobs.extend(d.logprobs or [])
    except EngineError as exc:
        raise engine_failure(exc) from exc
    take(gen.splitter.finish())
    if parser is not None:
        sort(parser.finish())
    reasoning_text = "".join(reasoning)
    text = "".join(content)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
        "reasoning": reasoning_text or None,
    }
    if reasoning_text:
        message["reasoning_details"] = reasoning_details(reasoning_text)
    if calls:
        message["tool_calls"] = [c.openai() for c in calls]
    return {
        **gen.base,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _finish(gen.tally.native_finish, len(calls)),
                "native_finish_reason": gen.tally.native_finish,
                "logprobs": chat_logprobs(logprobs, gen.top_n, gen.token_bytes) if want_logprobs else None,
            }
        ],
        "usage": gen.tally.usage(),
    }


# Streamed tool-call arguments are sent in pieces of this many characters (clients concatenate).
_ARG_PIECE = 32


async def _stream(gen: Generation, tools: ToolPlan) -> AsyncIterator[str]:
    base = gen.base
    parser = ToolCallParser() if tools.parse else None
    n_calls = 0

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> str:
        return sse(
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "finish_reason": _finish(finish, n_calls) if finish else None,
                        "native_finish_reason": finish,
                        "logprobs": logprobs,
                    }
                ],
            }
        )

    def call_deltas(call: ParsedCall, index: int) -> list[dict[str, Any]]:
        head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        out = [{"role": "assistant", "content": None, "tool_calls": [head]}]
        args = call.arguments
        for i in range(0, len(args), _ARG_PIECE):
            out.append(
                {"role": "assistant", "tool_calls": [{"index": index, "function": {"arguments": args[i : i + _ARG_PIECE]}}]}
            )
        return out

    def deltas(pieces: list[Piece]) -> list[dict[str, Any]]:
        nonlocal n_calls
        out: list[dict[str, Any]] = []
        for p in pieces:
            if p.kind == "reasoning":
                out.append(
                    {"role": "assistant", "content": "", "reasoning": p.text, "reasoning_details": reasoning_details(p.text)}
                )
            elif parser is None:
                out.append({"role": "assistant", "content": p.text})
            else:
                out.extend(items(parser.feed(p.text)))
        return out

    def items(parsed: list[Text | ParsedCall]) -> list[dict[str, Any]]:
        nonlocal n_calls
        out: list[dict[str, Any]] = []
        for it in parsed:
            if isinstance(it, Text):
                out.append({"role": "assistant", "content": it.text})
            elif tools.parallel or n_calls == 0:
                out.extend(call_deltas(it, n_calls))
                n_calls += 1
                gen.tool_calls += 1
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
        tail = deltas(gen.splitter.finish())
        if parser is not None:
            tail.extend(items(parser.finish()))
        for delta in tail:
            yield chunk(delta)
        yield chunk({"role": "assistant", "content": ""}, finish=gen.tally.native_finish)
        yield sse({**base, "object": "chat.completion.chunk", "choices": [], "usage": gen.tally.usage()})
        yield SSE_DONE
    except (EngineError, APIError) as exc:
        yield midstream_error(exc, base, "chat.completion.chunk", {"delta": {"content": ""}})
        yield SSE_DONE
