"""What running a plan yields: typed events, grouped in batches.

One batch per engine step (the engine may hand over several tokens at once; they stay together so
an adapter can send them as one chunk), one batch for the end of the answer, and a batch holding a
lone :class:`KeepAlive` while nothing is produced. A batch's :class:`Logprobs`, when there is one,
comes first and belongs to the batch's tokens. A stream ends with ``Finish`` + ``Usage``, or with
``Failure`` (nothing after it).
"""

from __future__ import annotations

from dataclasses import dataclass

from server.engine.base import TokenLogprob
from server.errors import APIError
from server.hermes.tools import ParsedCall


# Pieces and logprobs are made per engine step: plain slotted classes (a frozen dataclass's
# __init__ goes through object.__setattr__, measurably slower on the per-token path).
@dataclass(slots=True)
class ReasoningText:
    text: str


@dataclass(slots=True)
class AnswerText:
    text: str


@dataclass(slots=True)
class ToolCall:
    """A complete tool call (its name is only certain once its JSON closes)."""

    call: ParsedCall


@dataclass(slots=True)
class Logprobs:
    items: list[TokenLogprob]


@dataclass(slots=True, frozen=True)
class KeepAlive:
    pass


@dataclass(slots=True, frozen=True)
class Finish:
    """``reason``: OpenRouter's word (stop, length, tool_calls, error); ``native``: the engine's own.
    ``stop_sequence``: the stop string that ended the answer, when one did."""

    reason: str
    native: str
    stop_sequence: str | None = None


@dataclass(slots=True, frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    prompt_cost: float  # cached tokens at the cache-read price
    completion_cost: float
    cache_discount: float = 0.0  # USD the cached tokens saved

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> float:
        return round(self.prompt_cost + self.completion_cost, 12)


@dataclass(slots=True, frozen=True)
class Failure:
    """The generation failed after it started (engine failure, timeout, drain): the last event."""

    error: APIError


Piece = ReasoningText | AnswerText | ToolCall
PIECES = (ReasoningText, AnswerText, ToolCall)  # for isinstance on the per-token path (a tuple is fastest)
Event = Piece | Logprobs | KeepAlive | Finish | Usage | Failure
Batch = list[Event]
