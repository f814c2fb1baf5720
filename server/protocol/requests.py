"""Request models in OpenRouter's shapes (chat and legacy completions), and their conversion to
the API-neutral :class:`~server.task.Task` (``ChatRequest.task``, ``CompletionRequest.task``).

Unknown and routing-only fields (``provider``, ``models``, ``transforms``, ``plugins`` …) are
accepted and ignored, as OpenRouter does for a single self-hosted model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from server.engine.base import StructuredOutput
from server.hermes.parser import ends_inside_reasoning
from server.protocol.fields import (
    Lenient,
    NamedToolChoice,
    ResponseFormat,
    SamplingFields,
    Tool,
    output_format,
    reasoning_request,
    sampling,
    tool_request,
)
from server.task import RawPrompt, RequestInfo, Task


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


class StructuredOutputs(Lenient):
    """vLLM's ``structured_outputs`` extension: one grammar over the whole output, reasoning
    included."""

    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None

    @model_validator(mode="after")
    def _one(self) -> StructuredOutputs:
        if self.regex is None and self.choice is None and self.grammar is None:
            raise ValueError("structured_outputs needs one of regex (string), choice (list of strings), grammar (string)")
        return self

    def constraint(self) -> StructuredOutput:
        if self.regex is not None:
            return StructuredOutput(regex=self.regex)
        if self.choice is not None:
            return StructuredOutput(regex="|".join(_regex_escape(c) for c in self.choice))
        assert self.grammar is not None
        return StructuredOutput(grammar=self.grammar)


def _regex_escape(text: str) -> str:
    return "".join("\\" + ch if ch in r".^$*+?{}[]\|()" else ch for ch in text)


class ChatRequest(SamplingFields):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None

    @model_validator(mode="after")
    def _check(self) -> ChatRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def task(self, info: RequestInfo) -> Task:
        return Task(
            info=info,
            messages=[m.model_dump(exclude_none=True, by_alias=True) for m in self.messages],
            sampling=sampling(self),
            reasoning=reasoning_request(self),
            tools=tool_request(self.tools, self.tool_choice, self.parallel_tool_calls),
            max_tokens=self.max_completion_tokens or self.max_tokens,
            output_format=output_format(self.response_format),
            whole_output_grammar=self.structured_outputs.constraint() if self.structured_outputs is not None else None,
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            compress_middle=self.middle_out,
        )


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

    def task(self, info: RequestInfo) -> Task:
        """The prompt as is. Its output is split like chat's when a reasoning field asks for it
        or the prompt ends inside an open ``<think>``; the profile's reasoning default does not
        apply (the prompt is the caller's own)."""
        inside = ends_inside_reasoning(self.prompt_text)
        asked = self.reasoning is not None or self.reasoning_effort is not None or self.include_reasoning is not None
        return Task(
            info=info,
            raw=RawPrompt(self.prompt_text, split_reasoning=inside or asked, opens_reasoning=inside),
            sampling=sampling(self),
            reasoning=reasoning_request(self),
            max_tokens=self.max_tokens,
            logprobs=self.logprobs,
            reasoning_default_applies=False,
        )
