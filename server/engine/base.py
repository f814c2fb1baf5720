"""The engine seam: the only interface the rest of the server uses to generate.

Nothing outside ``server/engine/vllm_engine.py`` imports vLLM; these plain dataclasses carry
everything across the seam, so translation code is unit-tested with a fake engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class StructuredOutput:
    """Exactly one constraint, enforced by the engine's grammar backend."""

    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    regex: str | None = None
    grammar: str | None = None
    structural_tag: str | None = None


@dataclass(frozen=True)
class GenerationOptions:
    """Everything the engine needs to sample one request; built once per request (immutable)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    logit_bias: dict[int, float] | None = None
    # None: no logprobs; k >= 0: the sampled token's logprob plus the top k alternatives.
    logprobs: int | None = None
    structured: StructuredOutput | None = None
    thinking_token_budget: int | None = None
    # False tells the engine that this request has no reasoning phase (structured outputs
    # then apply from the first token).
    reasoning_ended: bool | None = None
    # vLLM's priority (lower is served first); it orders the queue only under priority scheduling.
    priority: int = 0
    # The data-parallel replica to run on (None: the engine's own balancer chooses).
    replica: int | None = None
    # Prefix-cache namespace: only requests with the same salt share cached blocks (per-key isolation).
    cache_salt: str | None = None
    min_tokens: int = 0
    ignore_eos: bool = False


@dataclass
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)


@dataclass
class EngineTiming:
    """Where a request's time went inside the engine, in seconds: in its scheduler's queue, in
    prefill (scheduled to first token), in decode (first token to last); from vLLM's own
    per-request timestamps."""

    queued: float
    prefill: float
    decode: float
    preemptions: int = 0


@dataclass
class EngineDelta:
    """New output since the previous delta of the same request."""

    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finished: bool = False
    # "stop" | "length" | "abort" | "error" (the engine's own words).
    finish_reason: str | None = None
    # The stop string or stop token id that ended generation, if any.
    stop_reason: int | str | None = None
    num_cached_tokens: int | None = None
    timing: EngineTiming | None = None  # on the last delta, when the engine reports it


class EngineError(Exception):
    """The engine failed while serving a request (not the client's fault)."""


class EngineRequestRejected(Exception):
    """The engine rejected a request's parameters (the client's fault)."""


@runtime_checkable
class EngineClient(Protocol):
    @property
    def ready(self) -> bool: ...

    @property
    def max_model_len(self) -> int: ...

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def generate(self, prompt_token_ids: list[int], options: GenerationOptions, request_id: str) -> AsyncIterator[EngineDelta]:
        """Stream deltas; closing the iterator early aborts the request in the engine."""
        ...

    def num_unfinished_requests(self) -> int: ...

    def kv_cache_usage(self) -> float | None: ...

    def queue_counts(self) -> tuple[int, int] | None:
        """(running, waiting) requests over every replica, as the engine reports them (None: not known)."""
        ...

    @property
    def replicas(self) -> int:
        """Data-parallel replicas behind this client (1: no choice to make)."""
        ...

    def replica_loads(self) -> list[int] | None:
        """Running + waiting requests per replica as the engine last reported them (None: not known)."""
        ...
