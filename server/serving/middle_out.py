"""OpenRouter's ``middle-out`` transform (also its ``context-compression`` plugin): a prompt that
does not fit the context loses messages from the middle of the conversation, then, if the first
and last alone are still too long, text from the middle of the longest of them, until it fits.
The first message (the system prompt, usually) and the last (the question) are kept.

Messages go in groups: an assistant turn and the tool results that answer its calls leave
together, so no tool result is left without its call. Removal starts nearest the middle and works
outwards; the number of groups removed is found by bisection, so a 100-message conversation is
rendered about eight times, not a hundred.

Hand-written: OpenRouter documents the behaviour, not an implementation, and no library does it
over a chat template's token counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Messages = list[dict[str, Any]]
# What the truncated middle of a message's text becomes.
ELISION = "\n…\n"


def _groups(messages: Messages) -> list[list[int]]:
    """Indexes of messages that must stay or go together: each message on its own, except that
    tool results join the turn before them."""
    groups: list[list[int]] = []
    for i, m in enumerate(messages):
        if m.get("role") == "tool" and groups:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _middle_first(groups: list[list[int]]) -> list[list[int]]:
    """The removable groups (not the first or the last), nearest the middle first."""
    inner = groups[1:-1]
    middle = (len(inner) - 1) / 2
    return sorted(inner, key=lambda g: (abs(groups.index(g) - 1 - middle), groups.index(g)))


def fit(messages: Messages, tokens: Callable[[Messages], int], budget: int) -> Messages | None:
    """``messages`` cut from the middle until ``tokens(messages) <= budget``; None if even the
    first and last messages cut to a few characters do not fit."""
    if tokens(messages) <= budget:
        return messages
    groups = _groups(messages)
    order = _middle_first(groups)

    def without(k: int) -> Messages:
        gone = {i for g in order[:k] for i in g}
        return [m for i, m in enumerate(messages) if i not in gone]

    lo, hi = 0, len(order)  # bisect the fewest groups to remove
    if tokens(without(hi)) <= budget:
        while lo < hi:
            mid = (lo + hi) // 2
            if tokens(without(mid)) <= budget:
                hi = mid
            else:
                lo = mid + 1
        return without(lo)
    return _truncate(without(len(order)), tokens, budget)


def _truncate(messages: Messages, tokens: Callable[[Messages], int], budget: int) -> Messages | None:
    """Cut the middle out of the longest text content until the whole fits."""
    texts = [(len(m["content"]), i) for i, m in enumerate(messages) if isinstance(m.get("content"), str)]
    if not texts:
        return None
    _, longest = max(texts)
    text = messages[longest]["content"]

    def keeping(n: int) -> Messages:
        cut = text if n >= len(text) else text[: (n + 1) // 2] + ELISION + text[len(text) - n // 2 :]
        return [{**m, "content": cut} if i == longest else m for i, m in enumerate(messages)]

    if tokens(keeping(0)) > budget:
        return None
    lo, hi = 0, len(text)  # bisect the most characters kept
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tokens(keeping(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return keeping(lo)
