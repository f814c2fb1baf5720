"""The Responses API's tools as coding agents send them, made into the function tools a Hermes
prompt lists, and the model's calls made back into the items the client expects.

- ``function`` tools are offered as they are.
- ``namespace`` tools (a named group of function or custom tools, as Codex sends them) are
  flattened: each inner tool is offered as ``<namespace>.<name>``, and a call to it comes back as
  a ``function_call`` (or ``custom_tool_call``) with ``name`` and ``namespace`` apart, as OpenAI
  returns it.
- ``custom`` (freeform) tools take one string: the model sees a function with a single string
  argument ``input`` and its call comes back as a ``custom_tool_call`` with that ``input``. A
  grammar the tool gives (``format``) is described to the model but not enforced.
- Hosted tools the server cannot run (``web_search``, ``file_search``, ``code_interpreter``,
  ``computer_use``, ``image_generation``, ``mcp`` …, and any other type) are left out of the
  prompt and named in the ``X-Hermes-Dropped-Tools`` response header and the log; only a
  ``tool_choice`` that forces one of them is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.errors import bad_request
from server.task import ToolSpec

CUSTOM_INPUT = "input"  # the one argument a custom tool's function takes


@dataclass(frozen=True)
class ClientTool:
    """What the client calls a tool the model knows by another name."""

    name: str
    namespace: str | None = None
    custom: bool = False


@dataclass
class ToolNames:
    """The client's tools as the model knows them (flattened names) and the way back."""

    specs: list[ToolSpec] = field(default_factory=list)
    client: dict[str, ClientTool] = field(default_factory=dict)  # model's name → the client's
    dropped: list[str] = field(default_factory=list)  # hosted tools left out, by type (or name)

    def model_name(self, name: str, namespace: str | None) -> str:
        """The name the model knows a client's tool by (for calls in the history)."""
        return f"{namespace}.{name}" if namespace else name


def flatten(tools: list[dict[str, Any]]) -> ToolNames:
    out = ToolNames()
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind == "namespace":
            namespace = tool.get("name")
            inner = tool.get("tools")
            if not isinstance(namespace, str) or not namespace or not isinstance(inner, list):
                raise bad_request(f"tools.{i}: a namespace tool needs name and tools")
            for j, member in enumerate(inner):
                if not isinstance(member, dict) or member.get("type") not in ("function", "custom"):
                    raise bad_request(f"tools.{i}.tools.{j}: a namespace holds function and custom tools")
                _add(out, member, f"tools.{i}.tools.{j}", namespace)
        elif kind in ("function", "custom"):
            _add(out, tool, f"tools.{i}", None)
        else:
            out.dropped.append(str(tool.get("name") or kind))
    return out


def _add(out: ToolNames, tool: dict[str, Any], where: str, namespace: str | None) -> None:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request(f"{where}.name is required")
    custom = tool.get("type") == "custom"
    model_name = out.model_name(name, namespace)
    description = tool.get("description")
    if custom:
        fmt = tool.get("format")
        note = (
            f" The input follows this grammar: {fmt.get('definition')}" if isinstance(fmt, dict) and fmt.get("definition") else ""
        )
        parameters: Any = {
            "type": "object",
            "properties": {CUSTOM_INPUT: {"type": "string", "description": "The tool's whole input, as text." + note}},
            "required": [CUSTOM_INPUT],
        }
        strict = None
    else:
        parameters, strict = tool.get("parameters"), tool.get("strict")
    out.specs.append(ToolSpec(model_name, description if isinstance(description, str) else None, parameters, strict))
    out.client[model_name] = ClientTool(name, namespace, custom)


def forced_hosted(choice: Any) -> str | None:
    """The hosted tool a ``tool_choice`` object forces, if it forces one."""
    if isinstance(choice, dict) and choice.get("type") not in (None, "function", "custom", "allowed_tools"):
        return str(choice.get("type"))
    return None
