"""Claude Code against a server set up for it: Claude's model ids served as this model
(``messages.model_patterns: ["claude-*"]``, README "Coding agents"), and a small context (24,000
tokens, so that a session's three turns outgrow it in seconds of CPU prefill rather than minutes).

Claude Code assumes a window of 1,000,000 tokens for a model it does not know (README, "Long
sessions"), so it never compacts on its own here: the server refuses the turn that does not fit,
in Anthropic's words, and Claude Code compacts the conversation and answers the turn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent_clis import DONE, MODEL, PLAIN, AgentServer, claude, serve_agents

pytestmark = pytest.mark.e2e

CONTEXT = 24_000
NOTES = " ".join(["alpha beta gamma delta"] * 1900)  # ~7,600 tokens a turn


@pytest.fixture(scope="module")
def small_context_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    yield from serve_agents(
        tmp_path_factory,
        "agents-small",
        HERMES_ENGINE__MAX_MODEL_LEN=str(CONTEXT),
        HERMES_MESSAGES__MODEL_PATTERNS='["claude-*"]',
    )


def _refused(server: AgentServer) -> float:
    """Messages requests the server has answered with 400 so far (its own metrics)."""
    return server.server.metric("hermes_http_requests_total", route="messages", status="400") or 0.0


def test_claude_code_compacts_a_session_the_server_refuses_and_carries_on(
    small_context_server: AgentServer, tmp_path: Path
) -> None:
    def turn(prompt: str, *flags: str) -> list[dict]:
        return claude(small_context_server, tmp_path, prompt, *flags)

    assert turn("Check the weather in Uruguay")[-1]["result"] == DONE  # ~11,600 tokens: the tool round trip
    fits = turn(f"Notes 1: {NOTES}. Summarize them.", "--continue")  # ~19,200 tokens: fits as it is
    assert fits[-1]["terminal_reason"] == "completed" and fits[-1]["result"] == DONE
    refused_before = _refused(small_context_server)
    events = turn(f"Notes 2: {NOTES}. Summarize them.", "--continue")  # ~27,000 tokens: over the context
    assert _refused(small_context_server) > refused_before  # the server said no ...
    assert any(e["type"] == "system" and e.get("subtype") == "compact_boundary" for e in events)  # ... Claude Code compacted
    # ... and answered the turn; the tool result it summarised away no longer steers the script.
    assert events[-1]["terminal_reason"] == "completed" and events[-1]["result"] == PLAIN


def test_claude_code_needs_only_the_address_and_key_when_the_server_takes_claude_ids(
    small_context_server: AgentServer, tmp_path: Path
) -> None:
    """No model settings at all: Claude Code asks for its default Claude model, or a tier's, and the
    server serves each as this model."""
    for flags in ((), ("--model", "haiku")):
        events = claude(small_context_server, tmp_path / "-".join(flags or ("default",)), "Say hello", *flags, models=False)
        (init,) = [e for e in events if e.get("subtype") == "init"]
        assert init["model"].startswith("claude-"), init["model"]  # what Claude Code asked for
        assert {e["message"]["model"] for e in events if e["type"] == "assistant"} == {MODEL}  # what answered
        assert events[-1]["result"] == PLAIN
