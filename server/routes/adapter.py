"""An API surface, declared once.

Each adapter module (``chat.py``, ``completions.py``, ``responses.py``, ``messages.py``) ends with
one :class:`Adapter` value: its name, its generation paths, its router and its error shape. The
app collects them (``server/app.py`` ``ADAPTERS``) and everything else is derived from that one
declaration: the routes it mounts, the paths the gateway admits and limits as generations, the
error body on its paths (route handlers and the gateway's own refusals alike), the ``route``
label of its requests in the metrics, ``RequestInfo.api`` and the usage record's API type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import APIRouter

from server.errors import ErrorShape


@dataclass(frozen=True)
class Adapter:
    name: str  # metrics label, RequestInfo.api, the usage record's `api`
    api_type: str  # OpenRouter's api_type on /api/v1/generation (chat and legacy completions: "completions")
    paths: tuple[str, ...]  # POST paths that start a generation: admitted, limited, counted
    router: APIRouter
    error_shape: ErrorShape | None = None  # None: OpenRouter's error body
    error_prefixes: tuple[str, ...] = ()  # where error_shape applies (path prefixes)
    # Paths under its own that carry another metrics label: (path prefix, label).
    sublabels: tuple[tuple[str, str], ...] = ()


def route_labels(adapters: Iterable[Adapter]) -> list[tuple[str, str]]:
    """(path prefix, metrics label), longest prefix first: each adapter's paths under its name
    (GET /v1/responses/{id} is "responses" too) and its sublabels, then the small routes'. Bounded
    label values: ids in paths never become one."""
    pairs = [(p, a.name) for a in adapters for p in a.paths] + [pair for a in adapters for pair in a.sublabels]
    pairs += [(p, "models") for p in ("/v1/models", "/api/v1/models")]
    pairs += [("/api/v1/generation", "generation"), ("/api/v1/key", "key"), ("/metrics", "metrics")]
    pairs += [("/api/v1/keys", "keys"), ("/api/v1/credits", "credits"), ("/api/v1/activity", "activity")]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def label_for(labels: list[tuple[str, str]], path: str) -> str:
    for prefix, label in labels:
        if path.startswith(prefix):
            return label
    return "other"
