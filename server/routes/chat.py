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
    finish_reason,
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
        **gateway_context(request, req.stream),
        thinking_budget=plan.budget(options.max_tokens),
        start_in_reasoning=prompt.opens_reasoning,
        reasoning=plan.enabled and whole is None,
    )
    if req.stream:
        return sse_response(_stream(gen, tools), headers)
    return JSONResponse(await _collect(gen, tools, bool(req.logprobs)), headers=headers)


class _Answer:
    """Engine text → reasoning pieces, content pieces and tool calls, one path for collected and
    streamed output: the reasoning split, then the tool-call parser on the content, then the
    ``parallel_tool_calls`` rule. Kept calls are counted on the Generation (usage record)."""

    def __init__(self, gen: Generation, tools: ToolPlan) -> None:
        self.gen, self.tools = gen, tools
        self.parser = ToolCallParser() if tools.parse else None

    def feed(self, text: str) -> list[Piece | ParsedCall]:
        return self._route(self.gen.splitter.feed(text))

    def finish(self) -> list[Piece | ParsedCall]:
        out = self._route(self.gen.splitter.finish())
        if self.parser is not None:
            out.extend(self._calls(self.parser.finish()))
        return out

    def _route(self, pieces: list[Piece]) -> list[Piece | ParsedCall]:
        out: list[Piece | ParsedCall] = []
        for p in pieces:
            if p.kind == "reasoning" or self.parser is None:
                out.append(p)
            else:
                out.extend(self._calls(self.parser.feed(p.text)))
        return out

    def _calls(self, items: list[Text | ParsedCall]) -> list[Piece | ParsedCall]:
        out: list[Piece | ParsedCall] = []
        for it in items:
            if isinstance(it, Text):
                out.append(Piece("content", it.text))
            elif self.tools.parallel or self.gen.tool_calls == 0:
                it.index = self.gen.tool_calls
                self.gen.tool_calls += 1
                out.append(it)
        return out


async def _collect(gen: Generation, tools: ToolPlan, want_logprobs: bool) -> dict[str, Any]:
    reasoning: list[str] = []
    content: list[str] = []
    calls: list[ParsedCall] = []
    logprobs: list[TokenLogprob] = []
    answer = _Answer(gen, tools)

    def take(items: list[Piece | ParsedCall]) -> None:
        for it in items:
            if isinstance(it, ParsedCall):
                calls.append(it)
            else:
                (reasoning if it.kind == "reasoning" else content).append(it.text)

    try:
        async for d in gen.deltas():
            gen.tally.add(d)
            take(answer.feed(d.text))
            logprobs.extend(d.logprobs or [])
    except EngineError as exc:
        raise engine_failure(exc) from exc
    take(answer.finish())
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
                "finish_reason": finish_reason(gen.tally.native_finish, gen.tool_calls),
                "native_finish_reason": gen.tally.native_finish,
                "logprobs": chat_logprobs(logprobs, gen.top_n, gen.token_bytes) if want_logprobs else None,
            }
        ],
        "usage": gen.tally.usage(),
    }


# Streamed tool-call arguments are sent in pieces of this many characters (clients concatenate).
_ARG_PIECE = 32


def _delta(item: Piece | ParsedCall) -> list[dict[str, Any]]:
    """OpenAI chunk deltas for one piece of the answer."""
    if isinstance(item, ParsedCall):
        head = {"index": item.index, "id": item.id, "type": "function", "function": {"name": item.name, "arguments": ""}}
        out: list[dict[str, Any]] = [{"role": "assistant", "content": None, "tool_calls": [head]}]
        args = item.arguments
        for i in range(0, len(args), _ARG_PIECE):
            piece = {"index": item.index, "function": {"arguments": args[i : i + _ARG_PIECE]}}
            out.append({"role": "assistant", "tool_calls": [piece]})
        return out
    if item.kind == "reasoning":
        return [{"role": "assistant", "content": "", "reasoning": item.text, "reasoning_details": reasoning_details(item.text)}]
    return [{"role": "assistant", "content": item.text}]


async def _stream(gen: Generation, tools: ToolPlan) -> AsyncIterator[str]:
    base = gen.base
    answer = _Answer(gen, tools)

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> str:
        return sse(
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "finish_reason": finish_reason(finish, gen.tool_calls) if finish else None,
                        "native_finish_reason": finish,
                        "logprobs": logprobs,
                    }
                ],
            }
        )

    def deltas(items: list[Piece | ParsedCall]) -> list[dict[str, Any]]:
        return [d for it in items for d in _delta(it)]

    yield KEEPALIVE
    try:
        async for d in with_keepalive(gen.deltas(), gen.settings.stream_keepalive_seconds):
            if d is None:
                yield KEEPALIVE
                continue
            gen.tally.add(d)
            lp = chat_logprobs(d.logprobs, gen.top_n, gen.token_bytes) if d.logprobs is not None else None
            out = deltas(answer.feed(d.text))
            if lp is not None and not out:
                out = [{"role": "assistant", "content": ""}]
            for i, delta in enumerate(out):
                yield chunk(delta, logprobs=lp if i == 0 else None)
        for delta in deltas(answer.finish()):
            yield chunk(delta)
        yield chunk({"role": "assistant", "content": ""}, finish=gen.tally.native_finish)
        yield sse({**base, "object": "chat.completion.chunk", "choices": [], "usage": gen.tally.usage()})
        yield SSE_DONE
    except (EngineError, APIError) as exc:
        yield midstream_error(exc, base, "chat.completion.chunk", {"delta": {"content": ""}})
        yield SSE_DONE
