"""A task, planned: the typed, immutable plan the core runs.

The planner (``serving/planning.py``) builds one with :func:`make_plan` from a task's prompt ids,
sampling options, reasoning and tool plans; everything Hermes-specific about the run is decided here, once:
whether the answer's grammar waits for ``</think>``, which thinking-budget mechanism applies, and
whether ``<think>`` is prefilled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from server.engine.base import GenerationOptions
from server.hermes.constraints import ToolPlan
from server.hermes.prompt import PromptRenderer
from server.task import ReasoningPlan, RequestInfo

# Opens reasoning when a constrained answer must follow it (see make_plan).
OPEN_THINK = "<think>\n"


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """How the engine's text becomes events."""

    split_reasoning: bool = True  # False: raw text (a legacy completion without reasoning fields)
    start_in_reasoning: bool = False  # the output starts inside <think> (a prefill left it open)
    exclude_reasoning: bool = False  # reasoning is generated and counted, but not sent
    parse_tools: bool = False
    parallel_tools: bool = True


@dataclass(frozen=True, slots=True)
class GenerationPlan:
    info: RequestInfo
    prompt_ids: tuple[int, ...]
    options: GenerationOptions
    output: OutputPlan
    # A plain-text <think> budget the server enforces (vLLM's own budget needs one-token tags).
    plain_budget: int | None = None
    # Reasoning runs unconstrained; the grammar in options.structured starts after </think>.
    grammar_after_reasoning: bool = False
    # The service tier it is served at (echoed in the response): default unless priority
    # scheduling is on and the request or its key asked for another.
    service_tier: str = "default"

    @property
    def top_logprobs(self) -> int:
        """Alternatives wanted per token (0 when logprobs are off or only the sampled token's)."""
        return self.options.logprobs or 0

    @property
    def two_phase(self) -> bool:
        return self.plain_budget is not None or self.grammar_after_reasoning


def make_plan(
    renderer: PromptRenderer,
    info: RequestInfo,
    prompt_ids: list[int],
    options: GenerationOptions,
    *,
    reasoning: ReasoningPlan,
    tools: ToolPlan | None = None,
    start_in_reasoning: bool = False,
    split_reasoning: bool = True,
    grammar_covers_reasoning: bool = False,
    service_tier: str = "default",
) -> GenerationPlan:
    """The plan for one request. ``options.structured`` is the answer's grammar (a JSON schema,
    forced tool calls …); ``grammar_covers_reasoning`` says it constrains the whole output,
    reasoning included (the ``structured_outputs`` extension)."""
    after = reasoning.enabled and options.structured is not None and not grammar_covers_reasoning
    ids = list(prompt_ids)
    if after and not start_in_reasoning:
        # The model opens <think> first in thinking mode anyway; prefilling it makes sure there is
        # a reasoning phase to wait for (otherwise the answer would escape the grammar).
        ids += renderer.encode_text(OPEN_THINK)
        start_in_reasoning = True
    if options.structured is not None and not after:
        options = replace(options, reasoning_ended=True)  # the grammar applies from the first token
    plain_budget = None
    budget = reasoning.budget(options.max_tokens)
    if budget is not None and budget < options.max_tokens:
        if renderer.think_is_one_token:
            options = replace(options, thinking_token_budget=budget)  # vLLM's own mechanism
        else:
            plain_budget = budget
    output = OutputPlan(
        split_reasoning=split_reasoning,
        start_in_reasoning=start_in_reasoning,
        exclude_reasoning=reasoning.exclude,
        parse_tools=tools is not None and tools.parse,
        parallel_tools=tools.parallel if tools is not None else True,
    )
    return GenerationPlan(
        info=info,
        prompt_ids=tuple(ids),
        options=options,
        output=output,
        plain_budget=plain_budget,
        grammar_after_reasoning=after,
        service_tier=service_tier,
    )
