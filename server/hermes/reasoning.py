"""OpenRouter's reasoning controls → one plan: think or not, return it or not, token budget."""

from __future__ import annotations

from dataclasses import dataclass

from server.constants import DEFAULT_EFFORT, EFFORT_SHARE
from server.errors import bad_request
from server.protocol.requests import SamplingFields


@dataclass(frozen=True)
class ReasoningPlan:
    enabled: bool
    exclude: bool = False
    effort: str | None = None
    max_reasoning_tokens: int | None = None  # reasoning.max_tokens, when the caller gave one

    def budget(self, max_tokens: int) -> int | None:
        """Hard cap on reasoning tokens for a request allowed ``max_tokens`` in all."""
        if not self.enabled:
            return None
        if self.max_reasoning_tokens is not None:
            return min(self.max_reasoning_tokens, max_tokens)
        return int(max_tokens * EFFORT_SHARE[self.effort or DEFAULT_EFFORT])


def plan_reasoning(req: SamplingFields, default_enabled: bool) -> ReasoningPlan:
    r = req.reasoning
    effort = r.effort if r is not None else None
    if req.reasoning_effort is not None:
        if effort is not None and effort != req.reasoning_effort:
            raise bad_request(
                f"reasoning_effort ({req.reasoning_effort!r}) contradicts reasoning.effort ({effort!r}): send one of them"
            )
        effort = req.reasoning_effort
    exclude = bool(r.exclude) if r is not None and r.exclude is not None else False
    explicit = r is not None or req.reasoning_effort is not None
    if req.include_reasoning is not None and r is None:
        # legacy: true ≡ reasoning: {}, false ≡ reasoning: {exclude: true}
        explicit = True
        exclude = not req.include_reasoning
    if r is not None and r.enabled is not None:
        enabled = r.enabled
    elif effort is not None:
        enabled = effort != "none"
    elif r is not None and r.max_tokens is not None:
        enabled = r.max_tokens > 0
    elif explicit:
        enabled = True
    else:
        enabled = default_enabled
    if effort == "none":
        enabled = False
    if not enabled:
        return ReasoningPlan(enabled=False, exclude=exclude)
    return ReasoningPlan(
        enabled=True,
        exclude=exclude,
        effort=effort or DEFAULT_EFFORT,
        max_reasoning_tokens=r.max_tokens if r is not None else None,
    )
