"""The one walk over a generation's events, and the encoder interface every API implements.

An adapter does not look at events itself: it gives :func:`walk` an :class:`Encoder` that turns
each kind of event into its own output (SSE frames for a stream; nothing, while it builds the body
state, for a non-streamed answer, which replays the same events through the same encoder).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from server.engine.base import TokenLogprob
from server.errors import APIError
from server.hermes.tools import ParsedCall
from server.serving.events import (
    PIECES,
    AnswerText,
    Batch,
    Failure,
    Finish,
    KeepAlive,
    Logprobs,
    Piece,
    ReasoningText,
    ToolCall,
    Usage,
)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Encoder(Protocol[T_co]):
    """What an API makes of each event. ``logprobs`` on :meth:`piece` are the tokens of the engine
    step the piece came from, given with the step's first piece only; a step with logprobs and no
    piece goes to :meth:`lone_logprobs`."""

    def piece(self, piece: Piece, logprobs: list[TokenLogprob] | None) -> Iterable[T_co]: ...

    def lone_logprobs(self, logprobs: list[TokenLogprob]) -> Iterable[T_co]: ...

    def keep_alive(self) -> Iterable[T_co]: ...

    def finish(self, finish: Finish) -> Iterable[T_co]: ...

    def usage(self, usage: Usage) -> Iterable[T_co]: ...

    def failure(self, error: APIError) -> Iterable[T_co]: ...


async def walk(batches: AsyncIterator[Batch], enc: Encoder[T], *, raise_failure: bool = False) -> AsyncIterator[T]:
    """``batches`` through ``enc``. ``raise_failure``: a failure is raised as its APIError (a
    non-streamed answer's status) instead of encoded."""
    async for batch in batches:
        lp: list[TokenLogprob] | None = None
        for ev in batch:
            if isinstance(ev, PIECES):
                for out in enc.piece(ev, lp):
                    yield out
                lp = None
            elif isinstance(ev, Logprobs):
                lp = ev.items
            elif isinstance(ev, KeepAlive):
                for out in enc.keep_alive():
                    yield out
            elif isinstance(ev, Finish):
                for out in enc.finish(ev):
                    yield out
            elif isinstance(ev, Usage):
                for out in enc.usage(ev):
                    yield out
            elif isinstance(ev, Failure):
                if raise_failure:
                    raise ev.error
                for out in enc.failure(ev.error):
                    yield out
        if lp is not None:
            for out in enc.lone_logprobs(lp):
                yield out


@dataclass
class Collected:
    """A whole answer: what the chat and legacy completion bodies are built from."""

    pieces: list[Piece]  # in the order the model produced them
    logprobs: list[TokenLogprob]
    finish: Finish
    usage: Usage

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pieces if isinstance(p, AnswerText))

    @property
    def reasoning(self) -> str:
        return "".join(p.text for p in self.pieces if isinstance(p, ReasoningText))

    @property
    def tool_calls(self) -> list[ParsedCall]:
        return [p.call for p in self.pieces if isinstance(p, ToolCall)]


class Collector:
    """The encoder that sends nothing and keeps everything: :meth:`result` is the answer."""

    def __init__(self) -> None:
        self._pieces: list[Piece] = []
        self._logprobs: list[TokenLogprob] = []
        self._finish: Finish | None = None
        self._usage: Usage | None = None

    def result(self) -> Collected:
        assert self._finish is not None and self._usage is not None, "collected before the generation finished"
        return Collected(self._pieces, self._logprobs, self._finish, self._usage)

    def piece(self, piece: Piece, logprobs: list[TokenLogprob] | None) -> Iterable[None]:
        self._pieces.append(piece)
        return self.lone_logprobs(logprobs or [])

    def lone_logprobs(self, logprobs: list[TokenLogprob]) -> Iterable[None]:
        self._logprobs.extend(logprobs)
        return ()

    def keep_alive(self) -> Iterable[None]:
        return ()

    def finish(self, finish: Finish) -> Iterable[None]:
        self._finish = finish
        return ()

    def usage(self, usage: Usage) -> Iterable[None]:
        self._usage = usage
        return ()

    def failure(self, error: APIError) -> Iterable[None]:
        raise error
