"""Which data-parallel replica serves a request: the one that already holds its prefix, unless
that replica is loaded well over the mean.

vLLM's own balancer places each request by load alone, so a session's next turn usually lands on
a replica that never saw its history and prefills all of it again. This router runs inside the
API process (no extra hop, unlike SGLang's router or llm-d's scheduler) and gives the engine a
``data_parallel_rank`` per request:

* **Affinity key.** An explicit session (``session_id``, ``x-session-id``, ``prompt_cache_key``,
  Anthropic's ``metadata.user_id``, chat's ``user``) when the request names one; else the prompt's
  leading KV blocks, hashed as a chain (block *i*'s hash covers blocks 0..*i*), so the longest
  prefix this process has routed before finds its replica, and unrelated clients that share a
  system prompt share a replica.
* **Home.** A key seen before goes where it went; a new one goes to the least loaded replica
  (in-flight first, then how much it was given lately), so sessions spread evenly.
* **Bounded load** (consistent hashing with bounded loads, Mirrokni et al. 2018): a home whose
  load (running + waiting) would pass ``ceil(load_factor x mean)`` is skipped for this request,
  which goes to the least loaded replica under the bound. The home is kept: the next turn goes
  back to the replica with the longest history. Below ``spill_floor`` requests a home never
  spills: a lightly loaded replica's step time barely grows with one more sequence, while a spill
  prefills the whole history again elsewhere (at 3 requests against 0, the bound alone would move
  a session).

Hand-written because no library does this for an in-process vLLM client: the routers that exist
are separate services that speak HTTP to the engines.
"""

from __future__ import annotations

import hashlib
import math
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The granularity prompts are hashed at: vLLM's KV block size on GPUs (its prefix cache reuses
# whole blocks). The CPU build's blocks are larger (128); affinity only needs the same cut for
# every request, not the engine's.
KV_BLOCK_TOKENS = 16
# How fast "given lately" forgets: a replica's recent count halves every this many seconds.
_RECENT_HALF_LIFE_S = 60.0


@dataclass(frozen=True, slots=True)
class AffinityKey:
    """What a request is routed by: an explicit session, or the chain hashes of its prompt's
    leading blocks (shortest first)."""

    session: str | None = None
    prefix: tuple[bytes, ...] = ()

    @property
    def kind(self) -> str:
        return "session" if self.session is not None else ("prefix" if self.prefix else "none")


def affinity_key(prompt_ids: Sequence[int], session: str | None, salt: str | None, blocks: int, min_blocks: int) -> AffinityKey:
    """The request's key. ``salt`` (the key's cache salt) keeps tenants' keys apart: requests
    with different salts never share cache, so they have nothing to share a replica for."""
    scope = (salt or "").encode()
    if session is not None:
        return AffinityKey(session=hashlib.blake2b(scope + b"\0" + session.encode(), digest_size=12).hexdigest())
    full = min(blocks, len(prompt_ids) // KV_BLOCK_TOKENS)
    if full < min_blocks:
        return AffinityKey()
    hashes: list[bytes] = []
    h = hashlib.blake2b(scope, digest_size=12).digest()
    for i in range(full):
        block = array("i", prompt_ids[i * KV_BLOCK_TOKENS : (i + 1) * KV_BLOCK_TOKENS]).tobytes()
        h = hashlib.blake2b(h + block, digest_size=12).digest()
        if i + 1 >= min_blocks:
            hashes.append(h)
    return AffinityKey(prefix=tuple(hashes))


@dataclass(frozen=True, slots=True)
class Route:
    replica: int
    reason: str  # "session" | "prefix" (home found) | "new" (placed) | "spill" (home over the bound)


class ReplicaRouter:
    def __init__(
        self,
        replicas: int,
        *,
        load_factor: float = 1.25,
        spill_floor: int = 8,
        prefix_blocks: int = 32,
        min_prefix_blocks: int = 4,
        ttl_seconds: float = 1800.0,
        max_keys: int = 200_000,
        processes: int = 1,
        engine_loads: Callable[[], Sequence[int] | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``engine_loads``: running + waiting per replica as the engine last reported them (all
        API processes' requests); this process's own count, scaled by ``processes``, is the floor
        between reports (as vLLM's balancer does)."""
        self.replicas = replicas
        self.load_factor = load_factor
        self.spill_floor = spill_floor
        self._blocks, self._min_blocks = prefix_blocks, min_prefix_blocks
        self._ttl = ttl_seconds
        self._max_keys = max_keys
        self._processes = processes
        self._engine_loads = engine_loads
        self._clock = clock
        self._in_flight = [0] * replicas
        self._recent = [0.0] * replicas
        self._recent_at = clock()
        self._homes: OrderedDict[str | bytes, tuple[int, float]] = OrderedDict()  # key → (replica, last used)

    def loads(self) -> list[int]:
        own = [n * self._processes for n in self._in_flight]
        reported = self._engine_loads() if self._engine_loads is not None else None
        if reported is None or len(reported) != self.replicas:
            return own
        return [max(a, int(b)) for a, b in zip(own, reported, strict=True)]

    def key_for(self, prompt_ids: Sequence[int], session: str | None, salt: str | None) -> AffinityKey:
        return affinity_key(prompt_ids, session, salt, self._blocks, self._min_blocks)

    def route(self, key: AffinityKey) -> Route:
        """Choose a replica and count the request on it until :meth:`release`."""
        now = self._clock()
        self._forget(now)
        loads = self.loads()
        bound = max(math.ceil(self.load_factor * (sum(loads) + 1) / self.replicas), self.spill_floor)
        home = self._home(key, now)
        if home is not None and loads[home] + 1 <= bound:
            route = Route(home, key.kind)
        else:
            under = [r for r in range(self.replicas) if loads[r] + 1 <= bound] or list(range(self.replicas))
            chosen = min(under, key=lambda r: (loads[r], self._recent[r], r))
            route = Route(chosen, "spill" if home is not None else "new")
            if home is None:
                home = chosen
        if home is not None:
            self._remember(key, home, now)
        self._in_flight[route.replica] += 1
        self._recent[route.replica] += 1.0
        return route

    def release(self, replica: int) -> None:
        self._in_flight[replica] -= 1

    def _home(self, key: AffinityKey, now: float) -> int | None:
        """The replica the key (or its longest known prefix) went to, if it is still fresh."""
        lookups: Sequence[str | bytes] = (key.session,) if key.session is not None else tuple(reversed(key.prefix))
        for k in lookups:
            hit = self._homes.get(k)
            if hit is not None and now - hit[1] < self._ttl:
                return hit[0]
        return None

    def _remember(self, key: AffinityKey, replica: int, now: float) -> None:
        for k in (key.session,) if key.session is not None else key.prefix:
            self._homes[k] = (replica, now)
            self._homes.move_to_end(k)
        while len(self._homes) > self._max_keys:
            self._homes.popitem(last=False)

    def _forget(self, now: float) -> None:
        """Decay the recent counts, and drop homes unused for the TTL (the oldest come first)."""
        factor = 0.5 ** ((now - self._recent_at) / _RECENT_HALF_LIFE_S)
        self._recent = [v * factor for v in self._recent]
        self._recent_at = now
        while self._homes:
            _, (_, used) = next(iter(self._homes.items()))
            if now - used < self._ttl:
                break
            self._homes.popitem(last=False)
