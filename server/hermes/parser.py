"""Incremental splitter of Hermes output into reasoning and content.

Hand-written on purpose: vLLM ships no Hermes reasoning parser, and its ``deepseek_r1``/``qwen3``
parsers misjudge Hermes 4 (they read the thinking system prompt's literal ``</think>`` as "reasoning
ended", or treat a thinking-off answer as reasoning; see docs/VLLM.md). This parser
judges only the output text of the request, so it is right whatever the prompt contains.

One parser serves streaming and non-streaming (non-streaming is the stream, collected), and its
result does not depend on how the text is chunked: a tag cut across chunks (``<thi`` + ``nk>``)
is held back until it is complete, and whitespace next to a tag is held until it is known whether
a tag follows. ``<think>`` may arrive as one token or as several: the parser only sees text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

OPEN = "<think>"
CLOSE = "</think>"

Kind = Literal["content", "reasoning"]


@dataclass
class Piece:
    kind: Kind
    text: str


def partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def split_at_tag(buf: str, tag: str) -> tuple[str, str, bool]:
    """(text before ``tag``, what follows it, True) when ``buf`` holds the tag; else (text that can
    go out now, a possible partial tag held back, False)."""
    idx = buf.find(tag)
    if idx >= 0:
        return buf[:idx], buf[idx + len(tag) :], True
    keep = partial_suffix(buf, tag)
    return buf[: len(buf) - keep], buf[len(buf) - keep :], False


class TagSpacing:
    """Text between tags with the whitespace next to a tag dropped, whatever the chunking:
    trailing whitespace is held until it is known whether a tag follows."""

    def __init__(self, after_tag: bool = False) -> None:
        self.ws = ""
        self.after_tag = after_tag

    def tag(self) -> None:
        """A tag was seen: drop whitespace before it, and after it."""
        self.ws = ""
        self.after_tag = True

    def text(self, text: str) -> str | None:
        """What of ``text`` can be emitted now (None: nothing yet)."""
        if not text:
            return None
        if self.after_tag:
            text = text.lstrip()
            if not text:
                return None
            self.after_tag = False
        body = text.rstrip()
        if not body:
            self.ws += text
            return None
        out = self.ws + body
        self.ws = text[len(body) :]
        return out

    def flush(self) -> str:
        ws, self.ws = self.ws, ""
        return ws


class ReasoningParser:
    def __init__(self, start_in_reasoning: bool = False) -> None:
        self.in_reasoning = start_in_reasoning
        self._buf = ""  # text not yet classified (a possible partial tag at its end)
        self._spacing = TagSpacing(after_tag=start_in_reasoning)

    @property
    def kind(self) -> Kind:
        return "reasoning" if self.in_reasoning else "content"

    def feed(self, text: str) -> list[Piece]:
        out: list[Piece] = []
        self._buf += text
        while True:
            before, self._buf, found = split_at_tag(self._buf, CLOSE if self.in_reasoning else OPEN)
            self._emit(before, out)
            if not found:
                return out
            self._spacing.tag()  # whitespace around a tag belongs to neither side
            self.in_reasoning = not self.in_reasoning

    def finish(self) -> list[Piece]:
        out: list[Piece] = []
        self._emit(self._buf, out)
        self._buf = ""
        ws = self._spacing.flush()
        if ws and not self.in_reasoning:
            out.append(Piece("content", ws))
        return out

    def _emit(self, text: str, out: list[Piece]) -> None:
        ready = self._spacing.text(text)
        if ready:
            out.append(Piece(self.kind, ready))


def ends_inside_reasoning(prompt: str) -> bool:
    """The text leaves ``<think>`` open (a caller prefilling the model's reasoning). The thinking
    system prompt's own ``<think> </think>`` is closed, so it never counts."""
    return prompt.rfind(OPEN) > prompt.rfind(CLOSE)


def reasoning_token_count(token_ids: Sequence[int], token_bytes: Callable[[int], bytes], start_in_reasoning: bool = False) -> int:
    """Exact number of generated tokens that belong to reasoning, tags included.

    Works on the tokens' bytes rather than on streamed text so the count does not depend on how
    the engine grouped tokens into deltas. A token counts when any of its bytes lies in a
    ``<think>…</think>`` span (an unclosed span runs to the end)."""
    spans: list[tuple[int, int]] = []
    data = b"".join(token_bytes(t) for t in token_ids)
    pos, inside, start = 0, start_in_reasoning, 0
    while True:
        tag = CLOSE.encode() if inside else OPEN.encode()
        idx = data.find(tag, pos)
        if idx < 0:
            break
        if inside:
            spans.append((start, idx + len(tag)))
        else:
            start = idx
        inside = not inside
        pos = idx + len(tag)
    if inside:
        spans.append((start, len(data)))
    if not spans:
        return 0
    count, offset, si = 0, 0, 0
    for t in token_ids:
        n = len(token_bytes(t))
        lo, hi = offset, offset + n
        while si < len(spans) and spans[si][1] <= lo:
            si += 1
        if si < len(spans) and spans[si][0] < hi and lo < spans[si][1] and n > 0:
            count += 1
        offset = hi
    return count


class ThinkWatch:
    """Follows ``<think>`` spans token by token, to cap reasoning or to find where it ends.

    Works on the tokens' bytes, so any tokenization of the tags is recognised. Two uses:
    a server-side thinking budget when ``<think>`` is plain text (vLLM's own budget matches the
    tag's token ids exactly, and Llama 3's BPE merges ``>`` with the newline that follows it —
    ``<think>\\n`` is ``<th|ink|>\\n``, not ``<th|ink|>`` — so the engine never sees a plain-text
    tag), and finding the end of reasoning so a grammar can start after it.
    A token counts once the opening tag is complete and until the closing tag completes."""

    def __init__(
        self,
        budget: int | None,
        token_bytes: Callable[[int], bytes],
        start_in_reasoning: bool = False,
        stop_at_close: bool = False,
    ) -> None:
        self.budget = budget
        self.inside = start_in_reasoning
        self.stop_at_close = stop_at_close
        self.count = 0
        self._token_bytes = token_bytes
        self._data = bytearray()
        self._scan = 0

    def feed(self, token_ids: Sequence[int]) -> tuple[Literal["budget", "closed"], int] | None:
        """Feed new tokens. ``None``: carry on. ``("budget", n)``: the budget is spent after the
        first n of them (drop the rest, force ``</think>``). ``("closed", n)``: reasoning ended
        with the n-th (only when ``stop_at_close``)."""
        for i, t in enumerate(token_ids):
            self._data += self._token_bytes(t)
            tag_done = closed = False
            while True:
                tag = (CLOSE if self.inside else OPEN).encode()
                idx = self._data.find(tag, self._scan)
                if idx < 0:
                    break
                closed = self.inside
                self.inside = not self.inside
                self._scan = idx + len(tag)
                tag_done = True
            # Only a partial tag at the end can still matter: keep the unscanned tail short.
            self._scan = max(self._scan, len(self._data) - len(CLOSE) + 1)
            if closed and not self.inside and self.stop_at_close:
                return ("closed", i + 1)
            if self.inside and not tag_done:
                self.count += 1
            if self.budget is not None and self.inside and self.count >= self.budget:
                return ("budget", i + 1)
        return None
