from __future__ import annotations

import pytest

from server.errors import APIError
from server.hermes.params import build_options, resolve_max_tokens
from server.protocol.requests import ChatRequest
from server.settings import SamplingDefaults


def _req(**kw) -> ChatRequest:
    return ChatRequest.model_validate({"messages": [{"role": "user", "content": "x"}], **kw})


def _opts(req: ChatRequest, prompt_tokens: int = 10, max_model_len: int = 100, defaults: SamplingDefaults | None = None):
    return build_options(
        req,
        requested_max_tokens=req.max_completion_tokens or req.max_tokens,
        prompt_tokens=prompt_tokens,
        max_model_len=max_model_len,
        defaults=defaults or SamplingDefaults(),
        stop_token_ids=[128009],
        vocab_size=128256,
    )


def test_defaults_fill_absent_fields() -> None:
    o = _opts(_req())
    assert (o.temperature, o.top_p, o.top_k) == (0.6, 0.95, 20)
    assert o.max_tokens == 90  # whatever room the context leaves
    o = _opts(_req(temperature=0, top_k=0, top_p=0.5, seed=3, stop="END", max_tokens=5))
    assert (o.temperature, o.top_k, o.top_p, o.seed, o.stop, o.max_tokens) == (0.0, 0, 0.5, 3, ["END"], 5)
    assert o.stop_token_ids == [128009]


def test_profile_default_max_tokens_caps_room() -> None:
    assert _opts(_req(), defaults=SamplingDefaults(max_tokens=7)).max_tokens == 7


def test_max_completion_tokens_wins() -> None:
    assert _opts(_req(max_tokens=50, max_completion_tokens=4)).max_tokens == 4


@pytest.mark.parametrize(("prompt", "requested"), [(10, 91), (100, None), (101, 1)])
def test_context_overflow_is_400(prompt: int, requested: int | None) -> None:
    with pytest.raises(APIError) as err:
        resolve_max_tokens(requested, prompt, 100, None)
    assert err.value.status == 400
    assert err.value.metadata and err.value.metadata["error_type"] == "context_length_exceeded"


def test_a_clamped_request_is_refused_for_its_prompt_alone() -> None:
    """Where max_tokens is cut to fit (Messages), a refusal can only be the prompt's: it names no
    output, so an API can word it as a prompt too long (and no client is told to shorten both)."""
    with pytest.raises(APIError) as err:
        resolve_max_tokens(32_000, 100, 100, None, clamp=True)
    assert err.value.metadata and err.value.metadata["requested_output_tokens"] is None
    assert "in the output" not in err.value.message


def test_exact_fit_is_allowed() -> None:
    assert resolve_max_tokens(90, 10, 100, None) == 90


def test_logit_bias() -> None:
    assert _opts(_req(logit_bias={"5": -100})).logit_bias == {5: -100.0}
    with pytest.raises(APIError):
        _opts(_req(logit_bias={"999999": 1}))
    with pytest.raises(ValueError):
        _req(logit_bias={"5": 101})
    with pytest.raises(ValueError):
        _req(logit_bias={"abc": 1})


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": 3},
        {"top_p": -0.1},
        {"top_k": -1},
        {"frequency_penalty": 2.5},
        {"repetition_penalty": 0},
        {"max_tokens": 0},
        {"top_logprobs": 3},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"n": 2},
    ],
)
def test_out_of_range_rejected(bad) -> None:
    with pytest.raises(ValueError):
        _req(**bad)


def test_min_tokens_and_ignore_eos_reach_the_engine() -> None:
    from server.protocol.requests import ChatRequest
    from server.settings import SamplingDefaults

    req = ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 16, "min_tokens": 50, "ignore_eos": True}
    )
    o = build_options(
        req,
        requested_max_tokens=16,
        prompt_tokens=10,
        max_model_len=100,
        defaults=SamplingDefaults(),
        stop_token_ids=[1],
        vocab_size=10,
    )
    assert o.min_tokens == 16 and o.ignore_eos  # min_tokens never exceeds max_tokens
    plain = ChatRequest.model_validate({"messages": [{"role": "user", "content": "x"}]})
    o = build_options(
        plain,
        requested_max_tokens=None,
        prompt_tokens=10,
        max_model_len=100,
        defaults=SamplingDefaults(),
        stop_token_ids=[1],
        vocab_size=10,
    )
    assert o.min_tokens == 0 and not o.ignore_eos
