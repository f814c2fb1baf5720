from __future__ import annotations

import pytest

from server.errors import APIError
from server.protocol.fields import plan_reasoning
from server.protocol.requests import ChatRequest


def plan(default: bool = False, **kw):
    return plan_reasoning(ChatRequest.model_validate({"messages": [{"role": "user", "content": "x"}], **kw}), default)


def test_no_field_follows_profile_default() -> None:
    assert plan().enabled is False
    assert plan(default=True).enabled is True


@pytest.mark.parametrize(
    ("kw", "enabled", "exclude"),
    [
        ({"reasoning": {"enabled": True}}, True, False),
        ({"reasoning": {"enabled": False}}, False, False),
        ({"reasoning": {}}, True, False),
        ({"reasoning": {"effort": "none"}}, False, False),
        ({"reasoning": {"effort": "low"}}, True, False),
        ({"reasoning": {"max_tokens": 100}}, True, False),
        ({"reasoning": {"exclude": True}}, True, True),
        ({"reasoning_effort": "high"}, True, False),
        ({"reasoning_effort": "none"}, False, False),
        ({"include_reasoning": True}, True, False),
        ({"include_reasoning": False}, True, True),
        ({"reasoning": {"enabled": True, "effort": "none"}}, False, False),
    ],
)
def test_forms(kw, enabled: bool, exclude: bool) -> None:
    p = plan(**kw)
    assert (p.enabled, p.exclude) == (enabled, exclude)


@pytest.mark.parametrize(("effort", "budget"), [("xhigh", 950), ("high", 800), ("medium", 500), ("low", 200), ("minimal", 100)])
def test_effort_is_a_share_of_max_tokens(effort: str, budget: int) -> None:
    assert plan(reasoning={"effort": effort}).budget(1000) == budget


def test_explicit_budget_and_default_medium() -> None:
    assert plan(reasoning={"max_tokens": 64}).budget(1000) == 64
    assert plan(reasoning={"max_tokens": 5000}).budget(1000) == 1000
    assert plan(reasoning={"enabled": True}).budget(1000) == 500
    assert plan(reasoning={"enabled": False}).budget(1000) is None


def test_contradicting_effort_is_400() -> None:
    with pytest.raises(APIError) as err:
        plan(reasoning={"effort": "low"}, reasoning_effort="high")
    assert err.value.status == 400
    assert plan(reasoning={"effort": "low"}, reasoning_effort="low").enabled
