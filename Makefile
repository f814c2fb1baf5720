# `make serve` and `make test` set everything up themselves on a fresh clone.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?=
PORT ?=
PROFILE ?=
TINY := models/tiny-hermes
TINY_PLAIN := models/tiny-hermes-plain
TINY_AGENT := models/tiny-hermes-agent
PYTEST_ARGS ?=

.PHONY: setup tiny-model agents tools serve test lint typecheck unit e2e clean

setup:
	@bash scripts/setup_env.sh

tiny-model: setup
	@$(PY) scripts/make_tiny_model.py --if-needed --out $(TINY)
	@$(PY) scripts/make_tiny_model.py --if-needed --plain-think --out $(TINY_PLAIN)
	@$(PY) scripts/make_agent_model.py --if-needed --out $(TINY_AGENT)

# Claude Code, Codex CLI and Hermes Agent for the agent tests, installed once into .cache/agents.
agents:
	@bash scripts/install_agents.sh

# promtool for the alert rules' tests, once into .cache/tools.
tools:
	@bash scripts/install_tools.sh

# GPUs: the profile that fits them best (hermes-server pick-profile); no GPU: the tiny model on
# 127.0.0.1:8000. PROFILE=name picks configs/name.yaml.
serve: setup
	@profile="$(PROFILE)"; \
	if [ -z "$$profile" ]; then \
	  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then \
	    profile=$$($(VENV)/bin/hermes-server pick-profile) || exit 2; \
	    echo "GPUs found: profile $$profile (override with PROFILE=<name>)"; \
	  else profile=tiny-cpu; fi; \
	fi; \
	if [ "$$profile" = tiny-cpu ]; then $(MAKE) --no-print-directory tiny-model; fi; \
	exec $(VENV)/bin/hermes-server serve --config configs/$$profile.yaml $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

lint: setup
	$(VENV)/bin/ruff check server scripts tests
	$(VENV)/bin/ruff format --check server scripts tests
	$(VENV)/bin/hadolint Dockerfile.gpu

typecheck: setup
	$(VENV)/bin/mypy

unit: tiny-model tools
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

e2e: tiny-model agents
	$(PY) -m pytest -q tests/e2e $(PYTEST_ARGS)

test:
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory setup tiny-model agents tools lint typecheck && \
	$(PY) -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS); status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s, exit $$status"; exit $$status

clean:
	rm -rf $(VENV) models .cache .mypy_cache .ruff_cache .pytest_cache
