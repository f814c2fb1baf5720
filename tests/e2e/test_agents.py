"""Coding agents, unmodified, against the server: Claude Code through Anthropic Messages, Codex CLI
through the Responses API, Hermes Agent through chat completions (its OpenRouter provider).

The real CLIs (installed once into .cache/agents by scripts/install_agents.sh) run in a temporary
HOME with telemetry off, configured only with the server's URL and a key, as the README's "Coding
agents" section says. The model is the scripted checkpoint (scripts/make_agent_model.py): with an
agent's marker word in the prompt it calls that agent's own shell tool with ``echo Tanzania``, and
once the tool's result is in the conversation it answers ``The command printed Tanzania.``; with
no marker it answers ``Hello from the scripted model!`` The real engine, tokenizer, template,
tool parser and each API's encoder run. One server serves every agent test."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent_clis import (
    CLAUDE,
    CODEX,
    DONE,
    HERMES,
    MODEL,
    PLAIN,
    AgentServer,
    claude,
    claude_env,
    claude_run,
    json_lines,
    run_agent,
    serve_agents,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    yield from serve_agents(tmp_path_factory, "agents")


def test_claude_code_answers_and_runs_its_bash_tool(agent_server: AgentServer, tmp_path: Path) -> None:
    plain = claude(agent_server, tmp_path / "plain", "Say hello", openrouter_style=True)
    assert plain[-1]["type"] == "result" and plain[-1]["result"] == PLAIN
    events = claude(agent_server, tmp_path / "tool", "Check the weather in Uruguay")
    calls = [b for e in events if e["type"] == "assistant" for b in e["message"]["content"] if b["type"] == "tool_use"]
    assert [(c["name"], c["input"]) for c in calls] == [("Bash", {"command": "echo Tanzania"})]
    results = [b for e in events if e["type"] == "user" for b in e["message"]["content"] if b["type"] == "tool_result"]
    assert [r["content"] for r in results] == ["Tanzania"] and not results[0]["is_error"]
    assert events[-1]["type"] == "result" and events[-1]["result"] == DONE


def test_claude_code_tiers_are_this_model_by_the_readmes_settings(agent_server: AgentServer, tmp_path: Path) -> None:
    """Claude Code names Claude ids of its own for ``--model``, ``/model``, subagents and background
    tasks; the README's ``ANTHROPIC_DEFAULT_*_MODEL`` settings name this server's model for each.
    Without them (and without ``messages.model_patterns``) the id is refused."""
    for tier in ("haiku", "fable"):
        events = claude(agent_server, tmp_path / tier, "Say hello", "--model", tier)
        assert events[-1]["result"] == PLAIN, tier
    bare = claude_run(agent_server, tmp_path / "bare", "Say hello", "--model", "haiku", models=False)
    refusal = json_lines(bare.stdout)[-1]["result"]
    assert refusal.startswith("API Error: 400 claude-haiku") and refusal.endswith("is not a valid model ID"), refusal


def _codex_run(agent_server: AgentServer, home: Path, prompt: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """``codex exec`` with ``prompt`` piped in (its ``-``), as a long prompt must be; ``flags``:
    more of its options."""
    (home / ".codex").mkdir(parents=True, exist_ok=True)
    (home / ".codex" / "config.toml").write_text(codex_config(agent_server.server.v1))
    cmd = [str(CODEX), "exec", "--skip-git-repo-check", "--json", *flags, "-"]
    return run_agent(cmd, home, {"HERMES_API_KEY": agent_server.key, "CODEX_HOME": str(home / ".codex")}, stdin=prompt)


def _codex(agent_server: AgentServer, home: Path, prompt: str, *flags: str) -> list[dict]:
    run = _codex_run(agent_server, home, prompt, *flags)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json_lines(run.stdout)


def codex_config(base_url: str) -> str:
    """The provider block the README gives for Codex (wire_api = "responses")."""
    return f"""model = "{MODEL}"
model_provider = "hermes"

[model_providers.hermes]
name = "hermes-server"
base_url = "{base_url}"
env_key = "HERMES_API_KEY"
wire_api = "responses"
"""


def test_codex_answers_and_runs_its_exec_command_tool(agent_server: AgentServer, tmp_path: Path) -> None:
    plain = _codex(agent_server, tmp_path / "plain", "Say hello")
    assert [e["item"]["text"] for e in plain if e.get("item", {}).get("type") == "agent_message"] == [PLAIN]
    events = _codex(agent_server, tmp_path / "tool", "Check the weather in Mongolia")
    done = [e["item"] for e in events if e["type"] == "item.completed"]
    commands = [i for i in done if i["type"] == "command_execution"]
    assert len(commands) == 1 and "echo Tanzania" in commands[0]["command"]
    assert commands[0]["exit_code"] == 0 and commands[0]["aggregated_output"].strip() == "Tanzania"
    assert [i["text"] for i in done if i["type"] == "agent_message"] == [DONE]
    assert events[-1]["type"] == "turn.completed"


def test_codex_output_schema_gets_its_answer_in_the_schema(agent_server: AgentServer, tmp_path: Path) -> None:
    """``codex exec --output-schema`` asks for a strict JSON schema with reasoning on. The scripted
    model ends its turn while still reasoning; the server closes reasoning and the answer in the
    schema follows (before, the turn completed with reasoning alone and no message)."""
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    events = _codex(agent_server, tmp_path / "schema", "Say hello", "--output-schema", str(tmp_path / "schema.json"))
    (answer,) = [e["item"]["text"] for e in events if e.get("item", {}).get("type") == "agent_message"]
    assert set(json.loads(answer)) == {"ok"} and isinstance(json.loads(answer)["ok"], bool)


def _hermes(agent_server: AgentServer, home: Path, prompt: str) -> str:
    env = {"OPENROUTER_BASE_URL": agent_server.server.api_v1, "OPENROUTER_API_KEY": agent_server.key}
    run = run_agent([str(HERMES), "-z", prompt, "--provider", "openrouter", "-m", MODEL], home, env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout.strip()


def test_hermes_agent_answers_and_runs_its_terminal_tool(agent_server: AgentServer, tmp_path: Path) -> None:
    assert _hermes(agent_server, tmp_path / "plain", "Say hello").splitlines()[-1] == PLAIN
    before = len(agent_server.finishes())
    assert _hermes(agent_server, tmp_path / "tool", "Check the weather in Fiji").splitlines()[-1] == DONE
    # Its turns, as the server recorded them: the call to `terminal`, then the answer that only
    # follows a tool result in the conversation (the agent ran the command and sent its output).
    assert agent_server.finishes()[before:] == [("chat", "tool_calls"), ("chat", "stop")]


def test_hermes_agent_reads_the_served_context(agent_server: AgentServer, tmp_path: Path) -> None:
    """Hermes Agent sizes its context compression by the model's window, which it asks the
    server's /api/v1/models for (without an answer it would assume 256,000 tokens): no setting
    needed, unlike Claude Code and Codex (README, "Long sessions")."""
    ask = (
        "import os\n"
        "from agent.model_metadata import get_model_context_length\n"
        "print(get_model_context_length(os.environ['MODEL'], base_url=os.environ['OPENROUTER_BASE_URL'],"
        " api_key=os.environ['OPENROUTER_API_KEY'], provider='openrouter'))"
    )
    env = {"OPENROUTER_BASE_URL": agent_server.server.api_v1, "OPENROUTER_API_KEY": agent_server.key, "MODEL": MODEL}
    run = run_agent([str(HERMES.parent / "python"), "-c", ask], tmp_path, env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == "131072"


def test_agents_read_a_prompt_over_the_context_as_a_full_context(agent_server: AgentServer, tmp_path: Path) -> None:
    """A prompt over the 131,072-token context, piped in as a user pastes one: the server refuses
    it before the engine, and each agent reads the refusal as its context being full, not as an
    unknown error: Claude Code takes the counts from Anthropic's wording (the basis of the
    compaction it runs in a longer conversation), Codex the code OpenAI's API gives."""
    notes = "Notes: " + "alpha beta gamma delta " * 33_000  # ~132,000 tokens
    run = run_agent([str(CLAUDE), "-p", "--output-format", "json"], tmp_path / "claude", claude_env(agent_server), stdin=notes)
    result = json_lines(run.stdout)[-1]
    assert result["terminal_reason"] == "prompt_too_long" and result["api_error_status"] == 400, result
    assert "limit 131071" in result["result"], result["result"]
    run = _codex_run(agent_server, tmp_path / "codex", notes)
    failed = [e["error"]["message"] for e in json_lines(run.stdout) if e["type"] == "turn.failed"]
    assert len(failed) == 1 and "ran out of room in the model's context window" in failed[0], run.stdout[-2000:]


def test_long_tool_heavy_prompts_fit_and_leave_room(agent_server: AgentServer) -> None:
    """An agent-sized request: a ~40,000-token prompt with 40 tools renders within the context,
    leaves room for the answer, and is answered through chat and Messages alike (Messages cuts a
    max_tokens over what is left, as Claude Code's 128,000 would be; chat takes 32,000 as sent)."""
    import anthropic
    from openai import OpenAI

    tools = [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": "Does one thing. " * 20,
                "parameters": {"type": "object", "properties": {"arg": {"type": "string"}}},
            },
        }
        for i in range(40)
    ]
    system = "Project notes: " + "the build uses make and the tests use pytest. " * 4000
    chat = OpenAI(base_url=agent_server.server.v1, api_key=agent_server.key, max_retries=0, timeout=300)
    r = chat.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "Say hello"}],
        tools=tools,  # type: ignore[arg-type]
        max_tokens=32_000,
    )
    assert 30_000 < r.usage.prompt_tokens < 131_072 - 32_000 and r.choices[0].message.content == PLAIN
    sdk = anthropic.Anthropic(base_url=agent_server.server.url, api_key=agent_server.key, max_retries=0, timeout=300)
    anthropic_tools = [
        {"name": t["function"]["name"], "description": t["function"]["description"], "input_schema": t["function"]["parameters"]}
        for t in tools
    ]
    msg = sdk.messages.create(
        model=MODEL, max_tokens=128_000, system=system, tools=anthropic_tools, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert msg.content[0].text == PLAIN and msg.usage.input_tokens + msg.usage.cache_read_input_tokens > 30_000
