"""The tests' own helper modules never hide an installed package.

pytest's default import mode puts each test folder at the front of ``sys.path`` (the folders have
no ``__init__.py``), so a helper such as ``tests/e2e/agents.py`` is what ``import agents`` finds
in every test that runs after it, instead of the openai-agents package."""

from __future__ import annotations

from importlib.metadata import packages_distributions
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_test_helper_is_named_like_an_installed_package() -> None:
    installed = set(packages_distributions())
    assert "agents" in installed, "openai-agents, which the e2e tests use, is not installed"
    helpers = {path.stem for path in TESTS.rglob("*.py") if not path.stem.startswith("test_")}
    assert helpers - {"conftest"}, "no helper module found: the test looks in the wrong place"
    assert sorted(helpers & installed) == []
