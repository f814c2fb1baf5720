"""A :class:`~server.task.Task` → the :class:`~server.serving.plan.GenerationPlan` the core runs:
the prompt rendered (chat template with the thinking prompt and tools, or a raw prompt as is),
the reasoning and tool plans, the output format checked, the engine options, then ``make_plan``.

The one place every API's request is planned; it reads nothing but the task and the profile's
defaults, and it holds nothing (credit is held when a generation opens, ``ServingCore.open``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

from server.hermes.constraints import ToolPlan, check_output_format, plan_tools
from server.hermes.params import build_options
from server.hermes.prompt import PromptRenderer
from server.serving.middle_out import fit
from server.serving.plan import GenerationPlan, make_plan
from server.settings import SamplingDefaults
from server.task import Task

log = logging.getLogger("hermes.planning")

# Rendering a very long prompt (tens of thousands of tokens) takes long enough to stall other
# streams; below this many characters it is cheaper to render inline than to hop threads.
_RENDER_INLINE_CHARS = 20_000
# Output room middle-out leaves when the request sets no max_tokens.
_MIDDLE_OUT_RESERVE = 4096


@dataclass(frozen=True)
class PlanDefaults:
    """What the profile decides when a request does not."""

    sampling: SamplingDefaults
    reasoning_enabled: bool = False
    keep_cots: bool = False
    priority_scheduling: bool = False  # the engine orders its queue by priority (service tiers apply)


# Service tiers (OpenAI's and OpenRouter's service_tier) → vLLM priority: lower is served first.
# "auto" and OpenAI's "scale" are served as default.
TIER_PRIORITY = {"priority": 0, "default": 1, "flex": 2, "batch": 3}
# Batch requests' tier: below every interactive one.
BATCH_TIER = "batch"


def service_tier(requested: str | None, priority_scheduling: bool) -> tuple[str, int]:
    """The tier a request is served at, and its engine priority. Without priority scheduling
    every request is served alike: at default."""
    tier = requested if priority_scheduling and requested in TIER_PRIORITY else "default"
    return tier, TIER_PRIORITY[tier]


async def plan_task(renderer: PromptRenderer, max_model_len: int, defaults: PlanDefaults, task: Task) -> GenerationPlan:
    if task.dropped_tools:  # names only: no prompt text in the log
        log.info("tools left out (hosted tools this server cannot run): %s", ", ".join(task.dropped_tools))
    reasoning = task.reasoning.resolve(defaults.reasoning_enabled if task.reasoning_default_applies else False)
    tools: ToolPlan | None = None
    if task.raw is not None:
        ids = renderer.encode_prompt(task.raw.text)
        opens_reasoning, split = task.raw.opens_reasoning, task.raw.split_reasoning
    else:
        tools = plan_tools(task.tools)
        check_output_format(task.output_format)
        messages = task.messages
        tool_list = tools.offered

        def render(msgs: list[dict[str, Any]]) -> tuple[list[int], bool]:
            p = renderer.render_chat(msgs, tools=tool_list, thinking=reasoning.enabled, keep_cots=defaults.keep_cots)
            return p.token_ids, p.opens_reasoning

        size = sum(len(str(m.get("content") or "")) for m in messages)
        ids, opens_reasoning = await asyncio.to_thread(render, messages) if size > _RENDER_INLINE_CHARS else render(messages)
        if task.compress_middle and len(ids) + (task.max_tokens or 1) > max_model_len:
            # Without max_tokens, leave the answer some room: a prompt cut to the last token
            # would leave it none.
            budget = max_model_len - (task.max_tokens or min(_MIDDLE_OUT_RESERVE, max_model_len // 8))
            fitted = await asyncio.to_thread(fit, messages, lambda m: len(render(m)[0]), budget)
            if fitted is not None:  # else the context error below, as without the transform
                log.info("middle-out: %d of %d messages kept to fit the context", len(fitted), len(messages))
                ids, opens_reasoning = render(fitted)
        split = True
    whole = task.whole_output_grammar
    structured = whole or (tools.structured if tools is not None else None) or task.output_format
    sampling_defaults = defaults.sampling
    if task.info.default_max_tokens is not None:  # the key's own default for requests that set none
        sampling_defaults = sampling_defaults.model_copy(update={"max_tokens": task.info.default_max_tokens})
    options = build_options(
        task.sampling,
        requested_max_tokens=task.max_tokens,
        prompt_tokens=len(ids),
        max_model_len=max_model_len,
        defaults=sampling_defaults,
        stop_token_ids=renderer.stop_token_ids,
        vocab_size=renderer.vocab_size,
        logprobs=task.logprobs,
        structured=structured,
        clamp_max_tokens=task.clamp_max_tokens,
    )
    tier, priority = service_tier(task.info.service_tier, defaults.priority_scheduling)
    options = replace(options, priority=priority, cache_salt=task.info.cache_salt)
    return make_plan(
        renderer,
        task.info,
        ids,
        options,
        reasoning=reasoning,
        tools=tools,
        start_in_reasoning=opens_reasoning,
        split_reasoning=split,
        grammar_covers_reasoning=whole is not None,
        service_tier=tier,
    )
