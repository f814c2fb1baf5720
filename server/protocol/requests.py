"""Request models in OpenRouter's shapes (chat and legacy completions).

Unknown and routing-only fields (``provider``, ``models``, ``transforms``, ``plugins``, ``user``,
…) are accepted and ignored, as OpenRouter does for a single self-hosted model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from server.constants import Effort

StopField = str | Annotated[list[str], Field(max_length=4)] | None


class Lenient(BaseModel):
    """Unknown fields accepted (and ignored unless a route reads them), as OpenRouter does."""

    model_config = ConfigDict(extra="allow")


class TextPart(Lenient):
    type: str
    text: str | None = None


class FunctionCall(Lenient):
    name: str
    arguments: str | dict[str, Any] = ""


class ToolCall(Lenient):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    reasoning_details: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _check(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role 'tool' needs tool_call_id")
        if self.role != "assistant" and self.content is None:
            raise ValueError(f"a message with role {self.role!r} needs content")
        return self


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


class ChatRequest(SamplingFields):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _check(self) -> ChatRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool | None = None
    suffix: str | None = None

    @field_validator("echo")
    @classmethod
    def _echo(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("echo is not supported (the prompt is not repeated in the output)")
        return v

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("suffix (fill-in-the-middle) is not supported by this model")
        return v

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return v

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]
