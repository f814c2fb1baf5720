"""The reasoning splitter: chunking never changes the result (property-based)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from server.hermes.parser import ReasoningParser, reasoning_token_count

ATOMS = ["<think>", "</think>", "<", "</", "<th", "think", ">", "\n", " ", "a", "b c", "{", "}", "é", "<tool_call>", "x<y"]
texts = st.lists(st.sampled_from(ATOMS), max_size=40).map("".join)


def split_whole(text: str, start_in_reasoning: bool = False) -> tuple[str, str]:
    """(reasoning, content) of a complete output."""
    p = ReasoningParser(start_in_reasoning)
    pieces = p.feed(text) + p.finish()
    return (
        "".join(x.text for x in pieces if x.kind == "reasoning"),
        "".join(x.text for x in pieces if x.kind == "content"),
    )


def _split_points(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks, prev = [], 0
    for p in [*points, len(text)]:
        chunks.append(text[prev:p])
        prev = p
    return chunks


def _collect(chunks: list[str], start: bool = False) -> tuple[str, str]:
    p = ReasoningParser(start)
    pieces = [x for c in chunks for x in p.feed(c)] + p.finish()
    return "".join(x.text for x in pieces if x.kind == "reasoning"), "".join(x.text for x in pieces if x.kind == "content")


@settings(max_examples=400, deadline=None)
@given(texts, st.lists(st.integers(min_value=0, max_value=10_000), max_size=30), st.booleans())
def test_any_chunking_gives_the_same_split(text: str, cuts: list[int], start: bool) -> None:
    assert _collect(_split_points(text, cuts), start) == split_whole(text, start)
    assert _collect(list(text), start) == split_whole(text, start)  # one character at a time


def _without(text: str, tag: str) -> str:
    """``text`` with no ``tag`` left in it (one pass can make one: "</</think>think>")."""
    while tag in text:
        text = text.replace(tag, "")
    return text


@settings(max_examples=200, deadline=None)
@given(texts)
def test_text_without_an_opening_tag_is_all_content(text: str) -> None:
    text = _without(text, "<think>")
    reasoning, content = split_whole(text)
    assert reasoning == "" and content == text


@settings(max_examples=200, deadline=None)
@given(texts, texts)
def test_one_block_splits_into_its_parts(thought: str, answer: str) -> None:
    thought, answer = _without(thought, "</think>"), _without(answer, "<think>")
    reasoning, content = split_whole(f"<think>{thought}</think>{answer}")
    assert reasoning == thought.strip()
    assert content == answer.lstrip()


def test_typical_outputs() -> None:
    assert split_whole("<think>\nplan it\n</think>\nThe answer.") == ("plan it", "The answer.")
    assert split_whole("Direct answer.") == ("", "Direct answer.")
    assert split_whole("<think>unfinished thought") == ("unfinished thought", "")
    assert split_whole("A <b>tag</b> and x < y") == ("", "A <b>tag</b> and x < y")
    assert split_whole("<think>a</think>b<think>c</think>d") == ("ac", "bd")
    # the template already opened <think>: the output starts inside reasoning
    assert split_whole("plan</think>answer", start_in_reasoning=True) == ("plan", "answer")


def test_reasoning_token_count_is_exact(tokenizer, plain_tokenizer) -> None:
    from server.hermes.prompt import PromptRenderer

    for tok in (tokenizer, plain_tokenizer):
        r = PromptRenderer(tok)
        reasoning = "<think>\nsome careful thought\n</think>"
        ids_r = tok.encode(reasoning, add_special_tokens=False)
        ids_c = tok.encode("\nThe answer is 42.", add_special_tokens=False)
        assert reasoning_token_count(ids_r + ids_c, r.token_bytes) == len(ids_r)
        assert reasoning_token_count(ids_c, r.token_bytes) == 0
        assert reasoning_token_count(ids_r[:-1], r.token_bytes) == len(ids_r) - 1  # unclosed
