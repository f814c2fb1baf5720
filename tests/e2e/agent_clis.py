"""What the coding-agent tests share: the installed CLIs, a keyed server on the scripted agent
model (scripts/make_agent_model.py), and running an agent as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, RunningServer, start_server, stop_server

AGENTS = ROOT / ".cache" / "agents"
CLAUDE = AGENTS / "node_modules" / ".bin" / "claude"
CODEX = AGENTS / "node_modules" / ".bin" / "codex"
HERMES = AGENTS / "hermes-venv" / "bin" / "hermes"
MODEL = "nousresearch/hermes-4-70b"
DONE = "The command printed Tanzania."
PLAIN = "Hello from the scripted model!"


def agents_or_skip() -> None:
    unavailable = AGENTS / "UNAVAILABLE"
    if unavailable.exists():
        pytest.skip(unavailable.read_text().strip())
    missing = [p.name for p in (CLAUDE, CODEX, HERMES) if not p.exists()]
    assert not missing, f"agents not installed ({missing}): run `make agents`"


class AgentServer:
    def __init__(self, server: RunningServer, key: str, db_url: str) -> None:
        self.server, self.key, self.db_url = server, key, db_url

    def finishes(self) -> list[tuple[str | None, str | None]]:
        """(api, finish_reason) of every recorded generation, oldest first."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.db_url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT api, finish_reason FROM generations ORDER BY created_at")).all()
        engine.dispose()
        return [(r[0], r[1]) for r in rows]


def serve_agents(tmp_path_factory: pytest.TempPathFactory, name: str, **settings: str) -> Iterator[AgentServer]:
    """A keyed server on the scripted agent model (``settings``: more ``HERMES_…`` variables),
    until the generator is closed."""
    agents_or_skip()
    tmp = tmp_path_factory.mktemp(name)
    db_url = f"sqlite:///{tmp / 'hermes.db'}"
    env = {
        "HERMES_DATABASE_URL": db_url,
        "HERMES_AUTH_REQUIRED": "true",
        "HERMES_MODEL__PATH": "models/tiny-hermes-agent",
        **settings,
    }
    made = subprocess.run(
        [sys.executable, "-m", "server.cli", "keys", "create", "--label", "agents"],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    server = start_server(tmp, name, env=env)
    yield AgentServer(server, made.stdout.strip().splitlines()[-1], db_url)
    stop_server(server)


def run_agent(
    cmd: list[str], home: Path, env: dict[str, str], timeout: float = 300, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """An agent run as a user would start it: its own HOME and working folder, no terminal
    (``stdin``: text piped in, as a user pipes a long prompt)."""
    home.mkdir(parents=True, exist_ok=True)
    work = home / "work"
    work.mkdir(exist_ok=True)
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb"}
    return subprocess.run(
        cmd,
        cwd=work,
        env={**base, **env},
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


# The README's model settings for Claude Code: its main model, and each tier it may pick on its own
# (--model, /model, subagents, background tasks) named as this server's model.
CLAUDE_MODELS = {
    "ANTHROPIC_MODEL": MODEL,
    **{f"ANTHROPIC_DEFAULT_{tier}_MODEL": MODEL for tier in ("HAIKU", "SONNET", "OPUS", "FABLE")},
}


def claude_env(agent_server: AgentServer, openrouter_style: bool = False, models: bool = True) -> dict[str, str]:
    """The README's settings; ``openrouter_style``: OpenRouter's own Claude Code setup (its base
    ending in /api, the key as a bearer token) with only the host changed; ``models=False``: no
    model settings, only the address and the key."""
    url, key = agent_server.server.url, agent_server.key
    auth = (
        {"ANTHROPIC_BASE_URL": url + "/api", "ANTHROPIC_AUTH_TOKEN": key, "ANTHROPIC_API_KEY": ""}
        if openrouter_style
        else {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": key}
    )
    return {
        **auth,
        **(CLAUDE_MODELS if models else {}),
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }


def claude_run(
    agent_server: AgentServer, home: Path, prompt: str, *flags: str, openrouter_style: bool = False, models: bool = True
) -> subprocess.CompletedProcess[str]:
    """``claude -p`` with its Bash tool allowed (``flags``: more, e.g. ``--continue``), in
    stream-json."""
    cmd = [str(CLAUDE), "-p", prompt, *flags, "--allowedTools", "Bash", "--output-format", "stream-json", "--verbose"]
    return run_agent(cmd, home, claude_env(agent_server, openrouter_style, models))


def claude(
    agent_server: AgentServer, home: Path, prompt: str, *flags: str, openrouter_style: bool = False, models: bool = True
) -> list[dict]:
    """A ``claude_run`` that must succeed; its events."""
    run = claude_run(agent_server, home, prompt, *flags, openrouter_style=openrouter_style, models=models)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json_lines(run.stdout)
