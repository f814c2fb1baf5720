"""Request fields that constrain the output (tools, tool_choice, response_format) → a tool plan and
the engine grammar that enforces them (vLLM structured outputs, xgrammar backend)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from server.engine.base import StructuredOutput
from server.errors import bad_request
from server.hermes.tools import forced_calls_tag, strict_calls_tag
from server.protocol.requests import NamedToolChoice, ResponseFormat, Tool


@dataclass(frozen=True)
class ToolPlan:
    offered: list[dict[str, Any]] | None  # what the template lists for the model
    parse: bool  # turn <tool_call> blocks into tool_calls
    parallel: bool
    structured: StructuredOutput | None  # forced or strict calls


def check_schema(schema: Any, where: str) -> None:
    """An invalid JSON schema is the caller's mistake: 400 naming the problem."""
    if not isinstance(schema, dict):
        raise bad_request(f"{where} must be a JSON schema object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        raise bad_request(f"{where} is not a valid JSON schema: {exc.message}" + (f" (at {path})" if path else "")) from exc


class ToolFields(Protocol):
    """The request fields a tool plan is made from (chat's names; other APIs convert to them)."""

    @property
    def tools(self) -> list[Tool] | None: ...

    @property
    def tool_choice(self) -> Literal["none", "auto", "required"] | NamedToolChoice | None: ...

    @property
    def parallel_tool_calls(self) -> bool | None: ...


def plan_tools(req: ToolFields) -> ToolPlan:
    tools = req.tools or []
    choice = req.tool_choice
    parallel = req.parallel_tool_calls is not False
    names = [t.function.name for t in tools]
    if len(set(names)) != len(names):
        raise bad_request("tools: function names must be unique")
    named: str | None = None
    if isinstance(choice, NamedToolChoice):
        named = choice.function.get("name") if isinstance(choice.function, dict) else None
        if not isinstance(named, str) or not named:
            raise bad_request("tool_choice.function.name is required")
        if named not in names:
            raise bad_request(f"tool_choice names function {named!r}, which is not in tools")
    if choice == "required" and not tools:
        raise bad_request("tool_choice 'required' needs at least one tool in tools")
    if not tools or choice == "none":
        return ToolPlan(offered=None, parse=False, parallel=parallel, structured=None)
    offered = [t.model_dump(exclude_none=True, by_alias=True) for t in tools]
    for i, t in enumerate(offered):
        if "parameters" in t["function"]:
            check_schema(t["function"]["parameters"], f"tools.{i}.function.parameters")
    structured: StructuredOutput | None = None
    if named is not None:
        only = [t for t in offered if t["function"]["name"] == named]
        structured = StructuredOutput(structural_tag=forced_calls_tag(only, parallel=False))
    elif choice == "required":
        structured = StructuredOutput(structural_tag=forced_calls_tag(offered, parallel))
    elif any(t["function"].get("strict") for t in offered):
        structured = StructuredOutput(structural_tag=strict_calls_tag(offered, parallel))
    return ToolPlan(offered=offered, parse=True, parallel=parallel and named is None, structured=structured)


def response_format_constraint(rf: ResponseFormat | None) -> StructuredOutput | None:
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return StructuredOutput(json_object=True)
    assert rf.json_schema is not None and rf.json_schema.schema_ is not None
    check_schema(rf.json_schema.schema_, "response_format.json_schema.schema")
    return StructuredOutput(json_schema=rf.json_schema.schema_)
