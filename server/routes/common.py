"""What every API adapter does the same way: name the request, and the OpenRouter response base.

Bodies are parsed by FastAPI from the request models (so the OpenAPI document describes them);
a validation error is a 400 naming the field, in the route's own error shape."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from server.engine.base import StructuredOutput
from server.hermes.constraints import ToolPlan
from server.hermes.params import build_options
from server.hermes.reasoning import ReasoningPlan
from server.protocol.openrouter import generation_id
from server.protocol.requests import SamplingFields
from server.serving.plan import GenerationPlan, RequestInfo, make_plan
from server.state import AppState, app_state

# Rendering a very long prompt (tens of thousands of tokens) takes long enough to stall other
# streams; below this many characters it is cheaper to render inline than to hop threads.
_RENDER_INLINE_CHARS = 20_000


def request_info(request: Request, model: str | None, api: str, streamed: bool, user: object = None) -> RequestInfo:
    """A new generation id and who is asking: for the usage record and the response ids."""
    key = getattr(request.state, "api_key", None)
    h = request.headers
    return RequestInfo(
        gen_id=generation_id(),
        model=app_state(request).resolve_model(model),
        api=api,
        route=request.url.path,
        streamed=streamed,
        key_id=key.id if key is not None else None,
        credit_limit=key.credit_limit if key is not None else None,
        referer=h.get("http-referer") or h.get("referer"),
        title=h.get("x-title") or h.get("x-openrouter-title"),
        user=str(user)[:200] if user is not None else None,
        user_agent=(h.get("user-agent") or "")[:500] or None,
        created=RequestInfo.now(),
    )


def response_base(state: AppState, plan: GenerationPlan) -> dict[str, Any]:
    """The fields every chat or completion body and chunk repeats."""
    info = plan.info
    return {
        "id": info.gen_id,
        "created": info.created,
        "model": info.model,
        "provider": state.settings.provider_name,
        "system_fingerprint": state.fingerprint,
    }


async def plan_chat(
    state: AppState,
    info: RequestInfo,
    messages: list[dict[str, Any]],
    sampling: SamplingFields,
    *,
    max_tokens: int | None,
    reasoning: ReasoningPlan,
    tools: ToolPlan,
    structured: StructuredOutput | None,
    logprobs: int | None = None,
    grammar_covers_reasoning: bool = False,
) -> GenerationPlan:
    """The plan of a chat-shaped request, whatever API it came through: the messages rendered with
    the model's template (thinking prompt, tools), the engine options, then ``make_plan``."""
    core = state.core()
    renderer, settings = core.renderer, state.settings

    def render() -> Any:
        return renderer.render_chat(
            messages, tools=tools.offered, thinking=reasoning.enabled, keep_cots=settings.reasoning.keep_cots
        )

    size = sum(len(str(m.get("content") or "")) for m in messages)
    prompt = await asyncio.to_thread(render) if size > _RENDER_INLINE_CHARS else render()
    options = build_options(
        sampling,
        requested_max_tokens=max_tokens,
        prompt_tokens=len(prompt.token_ids),
        max_model_len=core.engine.max_model_len,
        defaults=settings.sampling,
        stop_token_ids=renderer.stop_token_ids,
        vocab_size=renderer.vocab_size,
        logprobs=logprobs,
        structured=structured,
    )
    plan = make_plan(
        renderer,
        info,
        prompt.token_ids,
        options,
        reasoning=reasoning,
        tools=tools,
        start_in_reasoning=prompt.opens_reasoning,
        grammar_covers_reasoning=grammar_covers_reasoning,
    )
    await state.hold_credit(plan)
    return plan
