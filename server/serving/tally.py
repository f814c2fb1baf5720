"""What a generation produced, counted exactly: the same figures feed the usage event, the
response bodies and the usage record."""

from __future__ import annotations

import time
from collections.abc import Callable

from server.engine.base import EngineDelta, EngineTiming
from server.hermes.parser import reasoning_token_count
from server.serving.events import Usage
from server.settings import Pricing


class Tally:
    def __init__(self, prompt_tokens: int, token_bytes: Callable[[int], bytes], start_in_reasoning: bool) -> None:
        self.prompt_tokens = prompt_tokens
        self.token_ids: list[int] = []
        self.cached_tokens = 0
        self.native_finish: str | None = None
        self.stop_reason: int | str | None = None
        self.first_token_at: float | None = None
        self.timing: EngineTiming | None = None  # where the engine spent the time (tracing)
        self._token_bytes = token_bytes
        self._start_in_reasoning = start_in_reasoning

    def add(self, d: EngineDelta) -> None:
        if d.token_ids:
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            self.token_ids.extend(d.token_ids)
        if d.num_cached_tokens is not None:
            self.cached_tokens = d.num_cached_tokens
        if d.finished:
            self.native_finish = d.finish_reason
            self.timing = d.timing
            self.stop_reason = d.stop_reason

    def usage(self, pricing: Pricing) -> Usage:
        completion = len(self.token_ids)
        cached = min(self.cached_tokens, self.prompt_tokens)
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion,
            cached_tokens=cached,
            reasoning_tokens=reasoning_token_count(self.token_ids, self._token_bytes, self._start_in_reasoning),
            prompt_cost=round(pricing.prompt_cost(self.prompt_tokens, cached), 12),
            completion_cost=round(completion * pricing.completion, 12),
            cache_discount=round(pricing.cache_discount(cached), 12),
        )
