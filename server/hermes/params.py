"""A task's sampling fields → engine :class:`GenerationOptions` (pure, no engine needed)."""

from __future__ import annotations

from server.engine.base import GenerationOptions, StructuredOutput
from server.errors import bad_request, context_error
from server.settings import SamplingDefaults
from server.task import Sampling


def resolve_max_tokens(
    requested: int | None, prompt_tokens: int, max_model_len: int, default: int | None, clamp: bool = False
) -> int:
    """Prompt + output must fit the served context; refuse before anything reaches the engine
    (``clamp``: a ``requested`` over the room left is cut to it while the prompt itself fits)."""
    room = max_model_len - prompt_tokens
    if requested is not None:
        if requested > room and not (clamp and room >= 1):
            # Clamped, only the prompt can be what does not fit: say so, not the output asked for.
            raise context_error(max_model_len, prompt_tokens, None if clamp else requested)
        return min(requested, room)
    if room < 1:
        raise context_error(max_model_len, prompt_tokens, None)
    return min(room, default) if default else room


def build_options(
    req: Sampling,
    *,
    requested_max_tokens: int | None,
    prompt_tokens: int,
    max_model_len: int,
    defaults: SamplingDefaults,
    stop_token_ids: list[int],
    vocab_size: int,
    logprobs: int | None = None,
    structured: StructuredOutput | None = None,
    clamp_max_tokens: bool = False,
) -> GenerationOptions:
    def pick(value: float | int | None, default: float | int) -> float:
        return float(default if value is None else value)

    logit_bias = None
    if req.logit_bias:
        logit_bias = {}
        for key, bias in req.logit_bias.items():
            tid = int(key)
            if tid >= vocab_size:
                raise bad_request(f"logit_bias: token id {tid} is outside the vocabulary (size {vocab_size})")
            logit_bias[tid] = float(bias)
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if any(s == "" for s in stop):
        raise bad_request("stop: empty stop strings are not allowed")
    max_tokens = resolve_max_tokens(requested_max_tokens, prompt_tokens, max_model_len, defaults.max_tokens, clamp_max_tokens)
    # top_p 0 keeps no token at all in vLLM (a 400 there); OpenRouter's providers read it as
    # "only the most likely token": greedy.
    greedy = req.top_p == 0
    return GenerationOptions(
        max_tokens=max_tokens,
        temperature=0.0 if greedy else pick(req.temperature, defaults.temperature),
        top_p=1.0 if greedy else pick(req.top_p, defaults.top_p),
        top_k=int(pick(req.top_k, defaults.top_k)),
        min_p=pick(req.min_p, defaults.min_p),
        frequency_penalty=pick(req.frequency_penalty, defaults.frequency_penalty),
        presence_penalty=pick(req.presence_penalty, defaults.presence_penalty),
        repetition_penalty=pick(req.repetition_penalty, defaults.repetition_penalty),
        seed=req.seed,
        stop=stop,
        stop_token_ids=list(stop_token_ids),
        logit_bias=logit_bias,
        logprobs=logprobs,
        min_tokens=min(req.min_tokens or 0, max_tokens),
        ignore_eos=bool(req.ignore_eos),
        structured=structured,
    )
