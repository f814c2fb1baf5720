#!/usr/bin/env bash
# Install the coding agents the end-to-end tests drive, once, into .cache/agents: Claude Code and
# Codex CLI from npm, Hermes Agent from PyPI into a virtualenv of its own (its dependencies stay
# out of the server's). Pinned versions; a stamp skips the work when they are already there.
# A registry that cannot be reached leaves .cache/agents/UNAVAILABLE with the reason, and the
# agent tests skip naming it; any other failure fails.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=.cache/agents
CLAUDE_CODE=@anthropic-ai/claude-code@2.1.332
CODEX=@openai/codex@0.171.0
HERMES_AGENT=hermes-agent==0.19.0
stamp="$DIR/.installed-$(echo "$CLAUDE_CODE $CODEX $HERMES_AGENT" | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0
mkdir -p "$DIR"
rm -f "$DIR/UNAVAILABLE"
unreachable() {
  echo "agents: $1" | tee "$DIR/UNAVAILABLE" >&2
  exit 0
}
echo "agents: installing $CLAUDE_CODE $CODEX (npm) and $HERMES_AGENT (pip) into $DIR"
if ! npm view "$CODEX" version >/dev/null 2>&1; then unreachable "the npm registry is not reachable"; fi
npm install --no-audit --no-fund --loglevel=error --prefix "$DIR" "$CLAUDE_CODE" "$CODEX" || exit 1
[ -x "$DIR/hermes-venv/bin/python" ] || python3 -m venv "$DIR/hermes-venv" || exit 1
if ! "$DIR/hermes-venv/bin/pip" download --no-deps -q -d "$DIR/.probe" "$HERMES_AGENT" >/dev/null 2>&1; then
  unreachable "PyPI is not reachable"
fi
rm -rf "$DIR/.probe"
"$DIR/hermes-venv/bin/pip" install -q "$HERMES_AGENT" 2>&1 | grep -v "is ignored: it is neither" || true
[ -x "$DIR/hermes-venv/bin/hermes" ] || exit 1
rm -f "$DIR"/.installed-*
touch "$stamp"
echo "agents: done"
