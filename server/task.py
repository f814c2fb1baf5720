"""A request, made API-neutral: what every adapter converts its body into, once, and the only
thing planning reads.

Each API adapter (Chat Completions, legacy Completions, Responses, Anthropic Messages) turns its
own request model into one :class:`Task`: chat-shaped messages (or a raw prompt), the tools and
tool choice, the output format, what the client asked of reasoning, the sampling fields, and
who is asking (:class:`RequestInfo`). Nothing here knows an API's wire format or the model's
template; the serving core's planner (``serving/planning.py``) makes a generation plan of it.

A leaf module: plain frozen dataclasses, imported by ``protocol/`` (which builds them),
``hermes/`` and ``serving/`` (which read them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from server.constants import DEFAULT_EFFORT, EFFORT_SHARE
from server.engine.base import StructuredOutput

if TYPE_CHECKING:
    from server.tracing import RequestTrace


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Who asked, through which API: what the usage record and the response ids carry."""

    gen_id: str
    model: str
    api: str  # the adapter's declared name (chat | completions | responses | messages)
    route: str
    streamed: bool
    key_id: int | None = None
    credit_limit: float | None = None  # the key's, USD: the generation's cost is held against it
    referer: str | None = None
    title: str | None = None
    user: str | None = None  # the caller's end user (OpenRouter's `user`), recorded as external_user
    user_agent: str | None = None
    created: int = 0
    # Routing and isolation: the session the request named (its turns share a replica), the
    # key's prefix-cache salt (derived by the server, never from the client), and the service
    # tier asked for (the request's own, else the key's default).
    session_id: str | None = None
    cache_salt: str | None = None
    service_tier: str | None = None
    variant: str | None = None  # OpenRouter's routing variant of the model id (nitro, floor, exacto)
    batch_id: str | None = None  # run by the batch runner for this batch (priced at the batch discount)
    default_max_tokens: int | None = None  # the key's completion-token default (else the profile's)
    trace: RequestTrace | None = None  # the request's spans (None: not traced)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One function the model may call."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def template_entry(self) -> dict[str, Any]:
        """The tool as the chat template lists it (OpenAI's function-tool shape)."""
        fn: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            fn["description"] = self.description
        if self.parameters is not None:
            fn["parameters"] = self.parameters
        if self.strict is not None:
            fn["strict"] = self.strict
        return {"type": "function", "function": fn}


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``auto`` (the model decides), ``none``, ``required`` (at least one call), or ``function``
    (exactly one call of ``name``)."""

    kind: Literal["auto", "none", "required", "function"] = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ToolRequest:
    tools: tuple[ToolSpec, ...] = ()
    choice: ToolChoice = ToolChoice()
    parallel: bool = True


@dataclass(frozen=True, slots=True)
class Sampling:
    """The sampling fields a client set (None: the profile's default)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    logit_bias: dict[str, float] | None = None
    min_tokens: int | None = None
    ignore_eos: bool | None = None


@dataclass(frozen=True)
class ReasoningPlan:
    """Whether the model thinks, whether its thinking is returned, and its budget."""

    enabled: bool
    exclude: bool = False
    effort: str | None = None
    max_reasoning_tokens: int | None = None  # an exact reasoning budget, when the caller gave one

    def budget(self, max_tokens: int) -> int | None:
        """Hard cap on reasoning tokens for a request allowed ``max_tokens`` in all."""
        if not self.enabled:
            return None
        if self.max_reasoning_tokens is not None:
            return min(self.max_reasoning_tokens, max_tokens)
        return int(max_tokens * EFFORT_SHARE[self.effort or DEFAULT_EFFORT])


@dataclass(frozen=True)
class ReasoningRequest:
    """What the client asked of reasoning; ``enabled=None`` leaves it to the profile's default."""

    enabled: bool | None = None
    exclude: bool = False
    effort: str | None = None
    max_reasoning_tokens: int | None = None

    def resolve(self, default_enabled: bool) -> ReasoningPlan:
        enabled = default_enabled if self.enabled is None else self.enabled
        if not enabled:
            return ReasoningPlan(enabled=False, exclude=self.exclude)
        return ReasoningPlan(
            enabled=True,
            exclude=self.exclude,
            effort=self.effort or DEFAULT_EFFORT,
            max_reasoning_tokens=self.max_reasoning_tokens,
        )


@dataclass(frozen=True)
class RawPrompt:
    """A legacy completion's prompt, sent as is (no template). ``split_reasoning``: the output is
    split at ``<think>…</think>`` like chat's; ``opens_reasoning``: the prompt ends inside it."""

    text: str
    split_reasoning: bool = False
    opens_reasoning: bool = False


@dataclass(frozen=True)
class Task:
    """One request, whatever API it came through."""

    info: RequestInfo
    messages: list[dict[str, Any]] = field(default_factory=list)  # chat-shaped (role, content, tool_calls …)
    raw: RawPrompt | None = None  # instead of messages: a prompt used as is
    sampling: Sampling = Sampling()
    reasoning: ReasoningRequest = ReasoningRequest()
    tools: ToolRequest = ToolRequest()
    max_tokens: int | None = None
    output_format: StructuredOutput | None = None  # the answer's format (JSON schema or object)
    whole_output_grammar: StructuredOutput | None = None  # constrains reasoning too (structured_outputs)
    logprobs: int | None = None  # alternatives per token; None: no logprobs
    # The profile's reasoning default does not apply (a raw prompt is the caller's own).
    reasoning_default_applies: bool = True
    # Tools the client offered that this server cannot run (hosted tools): left out, and named.
    dropped_tools: tuple[str, ...] = ()
    # A max_tokens over what the context leaves is cut to fit, not refused (see the Messages API).
    clamp_max_tokens: bool = False
    # A prompt over the context loses messages from its middle (OpenRouter's middle-out).
    compress_middle: bool = False
