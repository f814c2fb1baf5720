"""Request pieces the OpenRouter-shaped APIs share (chat, legacy completions, Responses): the
lenient base model, tools, response formats, reasoning and sampling fields with OpenRouter's
ranges, and their conversion to the parts of an API-neutral :class:`~server.task.Task`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from server.constants import Effort
from server.engine.base import StructuredOutput
from server.errors import bad_request
from server.protocol.routing_fields import ProviderPreferences
from server.task import ReasoningPlan, ReasoningRequest, Sampling, ToolChoice, ToolRequest, ToolSpec
from server.tracing import ATTRIBUTE_MAX_CHARS

StopField = str | Annotated[list[str], Field(max_length=4)] | None
# OpenAI's and OpenRouter's tiers ("scale" is served as default).
ServiceTier = Literal["auto", "default", "flex", "priority", "scale"]


class Lenient(BaseModel):
    """Unknown fields accepted (and ignored unless a route reads them), as OpenRouter does."""

    model_config = ConfigDict(extra="allow")


class FunctionDef(Lenient):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Lenient):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedToolChoice(Lenient):
    type: Literal["function"] = "function"
    function: dict[str, Any]


class JSONSchemaSpec(Lenient):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> ResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format of type 'json_schema' needs json_schema.schema")
        return self


class Reasoning(Lenient):
    enabled: bool | None = None
    effort: Effort | None = None
    max_tokens: int | None = Field(None, ge=0)
    exclude: bool | None = None


_TRACE_EXTRA_MAX = 16  # custom keys of OpenRouter's ``trace`` kept as span attributes


class TraceFields(Lenient):
    """OpenRouter's ``trace``: names for the caller's observability (its known keys; any other
    key is custom metadata). Recorded as attributes of the request's span when tracing is on."""

    trace_id: str | None = Field(None, max_length=256)
    trace_name: str | None = Field(None, max_length=256)
    span_name: str | None = Field(None, max_length=256)
    generation_name: str | None = Field(None, max_length=256)
    parent_span_id: str | None = Field(None, max_length=256)

    def attributes(self) -> dict[str, str | int | float | bool]:
        """As span attributes: the known keys as ``openrouter.trace.<key>``, up to 16 others
        (custom metadata) as ``openrouter.trace.metadata.<key>``, other than numbers and booleans
        as text of at most 256 characters."""
        extra = {k: v for k, v in (self.model_extra or {}).items() if v is not None}
        known = self.model_dump(exclude_none=True, exclude=set(extra))
        named = {f"openrouter.trace.{k}": v for k, v in known.items()}
        named |= {f"openrouter.trace.metadata.{k[:64]}": v for k, v in list(extra.items())[:_TRACE_EXTRA_MAX]}
        return {k: v if isinstance(v, bool | int | float) else str(v)[:ATTRIBUTE_MAX_CHARS] for k, v in named.items()}


class StreamOptions(Lenient):
    include_usage: bool | None = None


class SamplingFields(Lenient):
    """Sampling fields shared by chat and completions, with OpenRouter's ranges."""

    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)  # 0: greedy, as OpenRouter's providers read it
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    top_a: float | None = Field(None, ge=0, le=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    seed: int | None = None
    stop: StopField = None
    max_tokens: int | None = Field(None, ge=1)
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1)
    reasoning: Reasoning | None = None
    reasoning_effort: Effort | None = None
    include_reasoning: bool | None = None
    # vLLM extensions that load generators send (`vllm bench serve`, `hermes-server bench`) to fix
    # output lengths: at least min_tokens; ignore_eos keeps going past end-of-turn to max_tokens.
    min_tokens: int | None = Field(None, ge=0)
    ignore_eos: bool | None = None
    user: str | None = Field(None, max_length=10_000)  # the caller's end user, recorded (first 200 characters)
    # Routing: a session's turns go to the replica holding its prefix (OpenRouter's session_id;
    # OpenAI's prompt_cache_key means the same here).
    session_id: str | None = Field(None, max_length=10_000)
    prompt_cache_key: str | None = Field(None, max_length=10_000)
    service_tier: ServiceTier | None = None
    # OpenRouter's routing: fallback models (the first this server serves is used) and provider
    # preferences (checked against this deployment: protocol/routing_fields.py).
    models: list[str] | None = Field(None, max_length=100)
    provider: ProviderPreferences | None = None
    # OpenRouter's middle-out: ``transforms: ["middle-out"]`` or the ``context-compression`` plugin.
    transforms: list[str] | None = Field(None, max_length=16)
    plugins: list[dict[str, Any]] | None = Field(None, max_length=32)
    trace: TraceFields | None = None

    @property
    def middle_out(self) -> bool:
        """Whether a prompt over the context is cut from the middle instead of refused."""
        plugin = any(p.get("id") == "context-compression" and p.get("enabled") is not False for p in self.plugins or [])
        return plugin or "middle-out" in (self.transforms or [])

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        for key, bias in v.items():
            if not key.lstrip("-").isdigit() or int(key) < 0:
                raise ValueError(f"key {key!r} is not a token id")
            if not -100 <= bias <= 100:
                raise ValueError(f"bias for token {key} must be between -100 and 100")
        return v

    @field_validator("top_a")
    @classmethod
    def _top_a(cls, v: float | None) -> float | None:
        if v:  # vLLM has no top-a sampler; 0 (off) is accepted
            raise ValueError("top_a is not supported by this server (send 0 or leave it out)")
        return v

    @field_validator("n")
    @classmethod
    def _n(cls, v: int | None) -> int | None:
        if v is not None and v != 1:
            raise ValueError("only n=1 is supported")
        return v


def sampling(req: SamplingFields) -> Sampling:
    return Sampling(
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty,
        repetition_penalty=req.repetition_penalty,
        seed=req.seed,
        stop=req.stop,
        logit_bias=req.logit_bias,
        min_tokens=req.min_tokens,
        ignore_eos=req.ignore_eos,
    )


def reasoning_request(req: SamplingFields) -> ReasoningRequest:
    """OpenRouter's reasoning controls (``reasoning``, ``reasoning_effort``, legacy
    ``include_reasoning``) → what the client asked; unasked, the profile decides."""
    r = req.reasoning
    effort = r.effort if r is not None else None
    if req.reasoning_effort is not None:
        if effort is not None and effort != req.reasoning_effort:
            raise bad_request(
                f"reasoning_effort ({req.reasoning_effort!r}) contradicts reasoning.effort ({effort!r}): send one of them"
            )
        effort = req.reasoning_effort
    exclude = bool(r.exclude) if r is not None and r.exclude is not None else False
    explicit = r is not None or req.reasoning_effort is not None
    if req.include_reasoning is not None and r is None:
        # legacy: true ≡ reasoning: {}, false ≡ reasoning: {exclude: true}
        explicit = True
        exclude = not req.include_reasoning
    enabled: bool | None
    if r is not None and r.enabled is not None:
        enabled = r.enabled
    elif effort is not None:
        enabled = effort != "none"
    elif r is not None and r.max_tokens is not None:
        enabled = r.max_tokens > 0
    else:
        enabled = True if explicit else None
    if effort == "none":
        enabled, effort = False, None
    budget = r.max_tokens if r is not None else None
    return ReasoningRequest(enabled=enabled, exclude=exclude, effort=effort, max_reasoning_tokens=budget)


def plan_reasoning(req: SamplingFields, default_enabled: bool) -> ReasoningPlan:
    """The reasoning plan of an OpenRouter-shaped request under a profile default."""
    return reasoning_request(req).resolve(default_enabled)


def tool_request(
    tools: list[Tool] | None, choice: Literal["none", "auto", "required"] | NamedToolChoice | None, parallel: bool | None
) -> ToolRequest:
    specs = tuple(
        ToolSpec(t.function.name, t.function.description, t.function.parameters, t.function.strict) for t in tools or []
    )
    if isinstance(choice, NamedToolChoice):
        name = choice.function.get("name") if isinstance(choice.function, dict) else None
        return ToolRequest(specs, ToolChoice("function", name if isinstance(name, str) else None), parallel is not False)
    return ToolRequest(specs, ToolChoice(choice or "auto"), parallel is not False)


def output_format(rf: ResponseFormat | None) -> StructuredOutput | None:
    """``response_format`` → the answer's constraint (its schema is checked when planned)."""
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return StructuredOutput(json_object=True)
    assert rf.json_schema is not None and rf.json_schema.schema_ is not None
    return StructuredOutput(json_schema=rf.json_schema.schema_)
