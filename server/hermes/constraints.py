"""What constrains the output (tools, tool choice, the answer's format) → a tool plan and the
engine grammar that enforces it (vLLM structured outputs, xgrammar backend)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from server.engine.base import StructuredOutput
from server.errors import bad_request
from server.hermes.tools import forced_calls_tag, strict_calls_tag
from server.task import ToolRequest


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


def plan_tools(req: ToolRequest) -> ToolPlan:
    tools, choice, parallel = req.tools, req.choice, req.parallel
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise bad_request("tools: function names must be unique")
    named: str | None = None
    if choice.kind == "function":
        named = choice.name
        if not named:
            raise bad_request("tool_choice.function.name is required")
        if named not in names:
            raise bad_request(f"tool_choice names function {named!r}, which is not in tools")
    if choice.kind == "required" and not tools:
        raise bad_request("tool_choice 'required' needs at least one tool in tools")
    if not tools or choice.kind == "none":
        return ToolPlan(offered=None, parse=False, parallel=parallel, structured=None)
    offered = [t.template_entry() for t in tools]
    for i, t in enumerate(offered):
        if "parameters" in t["function"]:
            check_schema(t["function"]["parameters"], f"tools.{i}.function.parameters")
    structured: StructuredOutput | None = None
    if named is not None:
        only = [t for t in offered if t["function"]["name"] == named]
        structured = StructuredOutput(structural_tag=forced_calls_tag(only, parallel=False))
    elif choice.kind == "required":
        structured = StructuredOutput(structural_tag=forced_calls_tag(offered, parallel))
    elif any(t["function"].get("strict") for t in offered):
        structured = StructuredOutput(structural_tag=strict_calls_tag(offered, parallel))
    return ToolPlan(offered=offered, parse=True, parallel=parallel and named is None, structured=structured)


def check_output_format(fmt: StructuredOutput | None) -> None:
    """The answer's JSON schema must be one (400 otherwise)."""
    if fmt is not None and fmt.json_schema is not None:
        check_schema(fmt.json_schema, "response_format.json_schema.schema")
