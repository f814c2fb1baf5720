"""Our engine types to vLLM's and back: ``GenerationOptions`` → ``SamplingParams``, and from a
``RequestOutput`` its logprobs (finite, for JSON) and where its time went."""

from __future__ import annotations

import math
from typing import Any

from server.engine.base import EngineTiming, GenerationOptions, TokenLogprob

# What a masked token's logprob (-inf: a grammar forbids it) becomes: JSON has no infinity, and
# OpenAI's API and vLLM's own server use this floor too.
LOGPROB_FLOOR = -9999.0


def engine_timing(stats: Any) -> EngineTiming | None:
    """A finished request's queue, prefill and decode times from vLLM's per-request stats
    (``RequestStateStats``, kept while vLLM logs stats; its engine core's monotonic clock)."""
    if stats is None or not getattr(stats, "scheduled_ts", 0) or not getattr(stats, "first_token_ts", 0):
        return None
    return EngineTiming(
        queued=max(0.0, stats.scheduled_ts - stats.queued_ts),
        prefill=max(0.0, stats.first_token_ts - stats.scheduled_ts),
        decode=max(0.0, stats.last_token_ts - stats.first_token_ts),
        preemptions=int(stats.num_preemptions),
    )


def to_sampling_params(o: GenerationOptions) -> Any:
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    structured = None
    if o.structured is not None:
        s = o.structured
        if s.json_schema is not None:
            structured = StructuredOutputsParams(json=s.json_schema)
        elif s.json_object:
            structured = StructuredOutputsParams(json_object=True)
        elif s.regex is not None:
            structured = StructuredOutputsParams(regex=s.regex)
        elif s.grammar is not None:
            structured = StructuredOutputsParams(grammar=s.grammar)
        elif s.structural_tag is not None:
            structured = StructuredOutputsParams(structural_tag=s.structural_tag)
    return SamplingParams(
        n=1,
        max_tokens=o.max_tokens,
        temperature=o.temperature,
        top_p=o.top_p,
        top_k=o.top_k,
        min_p=o.min_p,
        frequency_penalty=o.frequency_penalty,
        presence_penalty=o.presence_penalty,
        repetition_penalty=o.repetition_penalty,
        seed=o.seed,
        stop=list(o.stop) or None,
        stop_token_ids=list(o.stop_token_ids) or None,
        logit_bias=o.logit_bias,
        logprobs=o.logprobs,
        min_tokens=o.min_tokens,
        ignore_eos=o.ignore_eos,
        structured_outputs=structured,
        thinking_token_budget=o.thinking_token_budget,
        # Hermes tags may be special tokens in the real tokenizer: keep them in the text so the
        # output parser sees them. The end-of-turn token itself is never part of the text.
        skip_special_tokens=False,
        spaces_between_special_tokens=False,
        output_kind=RequestOutputKind.DELTA,
    )


def finite_logprob(value: float) -> float:
    return value if math.isfinite(value) else LOGPROB_FLOOR


def logprobs_of(raw: Any, token_ids: Any) -> list[TokenLogprob]:
    result: list[TokenLogprob] = []
    if not raw:
        return result
    for tok_id, entry in zip(token_ids, raw, strict=False):
        chosen = entry.get(tok_id)
        top = sorted(
            (
                (tid, lp.decoded_token or "", finite_logprob(float(lp.logprob)), lp.rank)
                for tid, lp in entry.items()
                if lp.rank is not None
            ),
            key=lambda t: t[3],
        )
        result.append(
            TokenLogprob(
                token_id=int(tok_id),
                token=(chosen.decoded_token if chosen is not None else "") or "",
                logprob=finite_logprob(float(chosen.logprob)) if chosen is not None else LOGPROB_FLOOR,
                top=[(tid, text, lp) for tid, text, lp, _ in top],
            )
        )
    return result
