"""OpenRouter's routing fields, answered by a server that is the one provider of one model:
model variants (``nousresearch/hermes-4-70b:nitro``), ``models`` fallbacks and ``provider``
preferences.

- **Routing variants** (``:nitro``, ``:floor``, ``:exacto``) only order OpenRouter's providers:
  on any model they resolve to the model itself; the variant is recorded. Catalog variants
  (``:free``, ``:thinking`` …) are separate models OpenRouter lists; this server lists none, so
  they are not valid model ids here, as at OpenRouter for a model without them.
- **``models``**: fallbacks tried in order after ``model``; the first this server serves is used.
- **``provider``**: preferences this server cannot meet (``only`` or ``order`` without fallbacks
  naming other providers, ``ignore`` naming this one, ``quantizations`` without this deployment's,
  ``max_price`` under its prices) get OpenRouter's answer when no provider matches: a 404 "No
  allowed providers are available for the selected model." with the available and requested
  providers. Sorting, data-collection and ZDR preferences are met by a self-hosted server as is.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from server.errors import APIError

# OpenRouter's routing variants: they change only how it picks a provider.
ROUTING_VARIANTS = ("nitro", "floor", "exacto")


def split_variant(model: str) -> tuple[str, str | None]:
    """``author/slug:variant`` → (``author/slug``, ``variant``) for a routing variant; anything
    else is returned whole (a catalog variant is a model id of its own)."""
    base, sep, variant = model.rpartition(":")
    if sep and base and variant.lower() in ROUTING_VARIANTS:
        return base, variant.lower()
    return model, None


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenRouter's other preference fields are accepted


class MaxPrice(_Lenient):
    """USD per million tokens, as OpenRouter's ``provider.max_price`` takes them."""

    prompt: float | None = Field(None, ge=0)
    completion: float | None = Field(None, ge=0)


class ProviderPreferences(_Lenient):
    order: list[str] | None = None
    only: list[str] | None = None
    ignore: list[str] | None = None
    allow_fallbacks: bool | None = None
    quantizations: list[str] | None = None
    max_price: MaxPrice | None = None


def check_provider(prefs: ProviderPreferences | None, provider: str, quantization: str, prices: tuple[float, float]) -> None:
    """A 404 in OpenRouter's words when the preferences exclude this server."""
    if prefs is None:
        return
    me = provider.lower()
    requested: list[str] | None = None
    if prefs.only is not None and me not in {p.lower() for p in prefs.only}:
        requested = prefs.only
    elif prefs.ignore is not None and me in {p.lower() for p in prefs.ignore}:
        requested = [p for p in prefs.ignore if p.lower() != me]
    elif prefs.order is not None and prefs.allow_fallbacks is False and me not in {p.lower() for p in prefs.order}:
        requested = prefs.order
    if requested is not None:
        raise APIError(
            404,
            "No allowed providers are available for the selected model.",
            metadata={"available_providers": [provider], "requested_providers": requested},
        )
    if prefs.quantizations is not None and quantization.lower() not in {q.lower() for q in prefs.quantizations}:
        raise APIError(
            404,
            f"No endpoints found matching your quantization preferences: this deployment serves {quantization}.",
        )
    limit = prefs.max_price
    per_million = (prices[0] * 1e6, prices[1] * 1e6)
    if limit is not None and (
        (limit.prompt is not None and per_million[0] > limit.prompt)
        or (limit.completion is not None and per_million[1] > limit.completion)
    ):
        raise APIError(
            404,
            "No endpoints found matching your max_price: this deployment charges "
            f"{per_million[0]:g} USD per million prompt tokens and {per_million[1]:g} per million completion tokens.",
        )
