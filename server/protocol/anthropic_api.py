"""Anthropic Messages API request models (the current ``anthropic`` SDK's shapes) and their
conversion to the API-neutral :class:`~server.task.Task` (``MessagesRequest.task``)."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Literal

from pydantic import Field, model_validator

from server.engine.base import StructuredOutput
from server.errors import bad_request
from server.hermes.prompt import omitted_media
from server.protocol.fields import Lenient, TraceFields
from server.task import ReasoningRequest, RequestInfo, Sampling, Task, ToolRequest, ToolSpec
from server.task import ToolChoice as Choice

# Every model here is Lenient: cache_control and other annotations may sit on any object, and are
# accepted and ignored (prefix caching is automatic; its hits are reported in usage).


class ToolDef(Lenient):
    """A client tool (no ``type``, or ``custom``, with ``input_schema``) or a server tool Anthropic
    runs itself (``web_search_20250305``, ``code_execution_…``, ``bash_…`` …), which this server
    leaves out and names in ``X-Hermes-Dropped-Tools``. ``defer_loading`` (tool search) is
    accepted; such a tool is offered like any other."""

    type: str | None = None
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    input_schema: dict[str, Any] | None = None

    @property
    def runs_on_client(self) -> bool:
        return self.type in (None, "custom")


class ToolChoice(Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(Lenient):
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(None, ge=0)
    # "omitted": thinking blocks come back with an empty ``thinking`` and a signature.
    display: Literal["summarized", "omitted"] | None = None

    @model_validator(mode="after")
    def _check(self) -> Thinking:
        if self.type == "enabled" and self.budget_tokens is None:
            raise ValueError("thinking of type 'enabled' needs budget_tokens")
        return self


class OutputFormat(Lenient):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Lenient):
    format: OutputFormat | None = None
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None


class Message(Lenient):
    role: Literal["user", "assistant", "system"]  # system: as Claude Code sends it among the turns
    content: str | list[dict[str, Any]]


class MessagesRequest(Lenient):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    stop_sequences: list[str] | None = None
    metadata: dict[str, Any] | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    trace: TraceFields | None = None  # OpenRouter's, on its Messages endpoint too

    @property
    def user_id(self) -> str | None:
        user = (self.metadata or {}).get("user_id")
        return str(user) if user is not None else None

    @property
    def session(self) -> str | None:
        """The session in ``metadata.user_id``: Claude Code sends a JSON object as a string with
        a ``session_id`` (older versions: ``user_…_account_…_session_<id>``)."""
        user = self.user_id
        if user is None:
            return None
        with contextlib.suppress(ValueError):
            parsed = json.loads(user)
            if isinstance(parsed, dict) and isinstance(parsed.get("session_id"), str):
                return str(parsed["session_id"])
        _, sep, tail = user.rpartition("_session_")
        return tail if sep and tail else None

    @property
    def omit_thinking(self) -> bool:
        return self.thinking is not None and self.thinking.display == "omitted"

    def task(self, info: RequestInfo) -> Task:
        return Task(
            info=info,
            messages=chat_messages(self),
            sampling=Sampling(
                temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, stop=list(self.stop_sequences or [])
            ),
            reasoning=self.reasoning(),
            tools=self.tool_request(),
            max_tokens=self.max_tokens,
            output_format=self.output_format(),
            dropped_tools=tuple(t.name for t in self.tools or [] if not t.runs_on_client),
            # Anthropic's clients size max_tokens for a far larger window (Claude Code sends up to
            # 128,000): cut to what the context leaves rather than refuse every request.
            clamp_max_tokens=True,
        )

    def tool_request(self) -> ToolRequest:
        offered = [t for t in self.tools or [] if t.runs_on_client]
        tools = tuple(ToolSpec(t.name, t.description, t.input_schema or {"type": "object"}) for t in offered)
        c = self.tool_choice
        dropped = {t.name for t in self.tools or [] if not t.runs_on_client}
        if c is not None and c.type == "tool" and c.name in dropped:
            raise bad_request(f"tool_choice forces the server tool {c.name!r}, which this server cannot run")
        parallel = c is None or not c.disable_parallel_tool_use
        if c is None or c.type == "auto":
            return ToolRequest(tools, Choice("auto"), parallel)
        if c.type == "none":
            return ToolRequest(tools, Choice("none"), parallel)
        if c.type == "any":
            return ToolRequest(tools, Choice("required"), parallel)
        if not c.name:
            raise bad_request("tool_choice.name is required for a tool_choice of type 'tool'")
        return ToolRequest(tools, Choice("function", c.name), parallel)

    def output_format(self) -> StructuredOutput | None:
        fmt = self.output_config.format if self.output_config is not None else None
        return StructuredOutput(json_schema=fmt.schema_) if fmt is not None else None

    def reasoning(self) -> ReasoningRequest:
        """``thinking`` → Hermes reasoning: ``enabled`` with exactly its budget, ``disabled`` off,
        ``adaptive``/``between_tools`` on at the effort's share; absent: the profile's default
        (on when ``output_config.effort`` asks for effort)."""
        effort = self.output_config.effort if self.output_config is not None else None
        t = self.thinking
        if t is None:
            return ReasoningRequest(enabled=True if effort is not None else None, effort=effort)
        if t.type == "disabled":
            return ReasoningRequest(enabled=False)
        budget = t.budget_tokens if t.type == "enabled" else None
        return ReasoningRequest(enabled=True, effort=effort, max_reasoning_tokens=budget)


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _block_text(content: Any, where: str, tool_result: bool = False) -> str:
    """A string or text blocks as one text. In a tool result also ``tool_reference`` blocks, what
    Claude Code's tool search returns to load a ``defer_loading`` tool: every tool is already in
    the prompt here, so a reference becomes a line naming the tool; and images and documents,
    which become a note (``omitted_media``)."""
    if isinstance(content, str):
        return content
    lines: list[str] = []  # text blocks run on into one another; a reference is a line of its own
    text_runs_on = False
    for i, b in enumerate(content or []):
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text" and isinstance(b.get("text"), str):
            if text_runs_on:
                lines[-1] += b["text"]
            else:
                lines.append(b["text"])
            text_runs_on = True
        elif tool_result and kind == "tool_reference" and isinstance(b.get("tool_name"), str):
            lines.append(f"Tool loaded: {b['tool_name']}")
            text_runs_on = False
        elif tool_result and (note := omitted_media(kind)) is not None:
            lines.append(note)
            text_runs_on = False
        else:
            allowed = "text, tool_reference, image or document" if tool_result else "text only"
            raise bad_request(f"{where}.{i}: block type {kind!r} is not supported here ({allowed})")
    return "\n".join(lines)


def system_text(system: str | list[dict[str, Any]] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return _block_text(system, "system")


def chat_messages(req: MessagesRequest) -> list[dict[str, Any]]:
    """Anthropic turns → chat-shaped messages: ``tool_result`` blocks become ``tool`` messages,
    ``tool_use`` blocks the assistant turn's ``tool_calls``, ``thinking`` its ``reasoning``."""
    out: list[dict[str, Any]] = []
    system = system_text(req.system)
    if system:
        out.append({"role": "system", "content": system})
    for i, msg in enumerate(req.messages):
        texts: list[str] = []
        results = 0
        turn: dict[str, Any] = {"role": msg.role}
        for j, block in enumerate(_blocks(msg.content)):
            where = f"messages.{i}.content.{j}"
            kind = block.get("type")
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind == "tool_use" and msg.role == "assistant":
                call = {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})},
                }
                turn.setdefault("tool_calls", []).append(call)
            elif kind == "tool_result" and msg.role == "user":
                results += 1
                text = _block_text(block.get("content", ""), f"{where}.content", tool_result=True)
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": block.get("tool_use_id"),
                        "content": ("Error: " + text) if block.get("is_error") else text,
                    }
                )
            elif kind == "thinking" and msg.role == "assistant":
                turn["reasoning"] = (turn.get("reasoning") or "") + str(block.get("thinking", ""))
            elif kind == "redacted_thinking" and msg.role == "assistant":
                continue  # opaque: nothing to put back in the prompt
            elif kind in ("image", "document"):
                raise bad_request(f"{where}: {kind} blocks are not supported by this text-only model")
            else:
                raise bad_request(f"{where}.type: block type {kind!r} is not supported in a {msg.role} message")
        # A user turn that only returned tool results is those tool messages alone.
        if msg.role == "assistant" or texts or not results:
            turn["content"] = "".join(texts)
            out.append(turn)
    return out
