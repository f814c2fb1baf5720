"""A scripted engine for fast unit tests only (the real engine is tested end to end).

It emits a fixed reply one token at a time, honouring max_tokens and stop strings, so route,
protocol and streaming code can be exercised in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from server.engine.base import EngineDelta, EngineError, EngineTiming, GenerationOptions


class FakeEngine:
    def __init__(
        self, tokenizer: Any, reply: str = "Hello from the fake engine.", max_model_len: int = 131072, replicas: int = 1
    ):
        self.tokenizer = tokenizer
        self.reply = reply
        self._max_model_len = max_model_len
        self._ready = False
        self.running: set[str] = set()
        self.last_options: GenerationOptions | None = None
        self.last_prompt: list[int] | None = None
        # Raise EngineError after this many tokens (simulates the engine dying mid-request).
        self.fail_after: int | None = None
        # End the request with vLLM's "abort" after this many tokens (the engine shutting down).
        self.abort_after: int | None = None
        # Replies for the next requests, in order (then ``reply`` again); every prompt is kept.
        self.script: list[str] = []
        self.prompts: list[list[int]] = []
        # Seconds before the first token (a long prefill or a queue), for keep-alive tests.
        self.first_token_delay = 0.0
        # Data-parallel replicas, each with a prefix cache of whole 16-token blocks per cache salt:
        # a prompt's cached tokens are its longest block-aligned prefix seen on its replica.
        self._replicas = replicas
        self.replica_of: dict[str, int | None] = {}  # request id → the replica it asked for
        self._cached: dict[tuple[int, str | None], set[tuple[int, ...]]] = {}

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    async def start(self) -> None:
        self._ready = True

    async def shutdown(self) -> None:
        self._ready = False

    def num_unfinished_requests(self) -> int:
        return len(self.running)

    def kv_cache_usage(self) -> float | None:
        return 0.0

    def queue_counts(self) -> tuple[int, int] | None:
        return len(self.running), 0

    @property
    def replicas(self) -> int:
        return self._replicas

    def replica_loads(self) -> list[int] | None:
        return None

    def _prefix_hit(self, ids: list[int], options: GenerationOptions) -> int:
        blocks = self._cached.setdefault((options.replica or 0, options.cache_salt), set())
        hit = 0
        for end in range(16, len(ids) + 1, 16):
            prefix = tuple(ids[:end])
            if prefix in blocks and hit == end - 16:
                hit = end
            blocks.add(prefix)
        return hit

    async def generate(
        self, prompt_token_ids: list[int], options: GenerationOptions, request_id: str
    ) -> AsyncIterator[EngineDelta]:
        """The scripted reply; the last delta says where the time went, as vLLM's does (no
        queue here; the prefill is the first token's delay)."""
        first: float | None = None
        async with contextlib.aclosing(self._generate(prompt_token_ids, options, request_id)) as deltas:
            async for delta in deltas:
                first = time.monotonic() if first is None else first
                if delta.finished:
                    delta.timing = EngineTiming(queued=0.0, prefill=self.first_token_delay, decode=time.monotonic() - first)
                yield delta

    async def _generate(
        self, prompt_token_ids: list[int], options: GenerationOptions, request_id: str
    ) -> AsyncGenerator[EngineDelta, None]:
        self.last_options, self.last_prompt = options, list(prompt_token_ids)
        self.prompts.append(list(prompt_token_ids))
        self.replica_of[request_id] = options.replica
        cached = self._prefix_hit(list(prompt_token_ids), options)
        reply = self.script.pop(0) if self.script else self.reply
        ids = self.tokenizer.encode(reply, add_special_tokens=False)
        self.running.add(request_id)
        text_so_far = ""
        try:
            if self.first_token_delay:
                await asyncio.sleep(self.first_token_delay)
            for n, tid in enumerate(ids, start=1):
                if self.fail_after is not None and n > self.fail_after:
                    raise EngineError("engine core died")
                piece = self.tokenizer.decode([tid])
                candidate = text_so_far + piece
                hit = next((s for s in options.stop if s in candidate), None)
                if hit is not None:
                    cut = candidate.index(hit)
                    yield self._delta(candidate[len(text_so_far) : cut], [tid], "stop", hit, cached)
                    return
                text_so_far = candidate
                finish = "length" if n >= options.max_tokens else ("stop" if n == len(ids) else None)
                if self.abort_after is not None and n >= self.abort_after:
                    finish = "abort"
                yield self._delta(piece, [tid], finish, None, cached)
                if finish:
                    return
        finally:
            self.running.discard(request_id)

    @staticmethod
    def _delta(text: str, ids: list[int], finish: str | None, stop: str | None, cached: int) -> EngineDelta:
        return EngineDelta(
            text=text,
            token_ids=ids,
            finished=finish is not None,
            finish_reason=finish,
            stop_reason=stop,
            num_cached_tokens=cached if finish else None,
        )
