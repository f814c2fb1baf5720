"""Model records in OpenRouter's shapes, filled with this deployment's real values.

The descriptive fields are OpenRouter's published record for ``nousresearch/hermes-4-70b``
(docs/OPENROUTER.md); context length, prices, quantization and the
parameter list come from the running profile, so the record never promises what is not served.
"""

from __future__ import annotations

from typing import Any

from server.constants import HF_REPO, OPENROUTER_MODEL_ID
from server.settings import Settings

NAME = "Nous: Hermes 4 70B"
CREATED = 1756236182
DESCRIPTION = (
    "Hermes 4 70B is a hybrid reasoning model from Nous Research, built on Meta-Llama-3.1-70B. It introduces the "
    "same hybrid mode as the larger 405B release, allowing the model to either respond directly or generate explicit "
    "<think>...</think> reasoning traces before answering. Users can control the reasoning behaviour with the "
    "`reasoning` `enabled` boolean. [Learn more in our docs](https://openrouter.ai/docs/use-cases/reasoning-tokens"
    "#enable-reasoning-with-default-config)\n\nThis 70B variant is trained with the expanded post-training corpus "
    "(~60B tokens) emphasizing verified reasoning data, leading to improvements in mathematics, coding, STEM, logic, "
    "and structured outputs while maintaining general assistant performance. It supports JSON mode, schema adherence, "
    "function calling, and tool use, and is designed for greater steerability with reduced refusal rates."
)
ARCHITECTURE: dict[str, Any] = {
    "modality": "text->text",
    "input_modalities": ["text"],
    "output_modalities": ["text"],
    "tokenizer": "Llama3",
    "instruct_type": None,
}

# Parameters this server honours (OpenRouter's ten for this model, plus what else it maps onto
# the engine). Listed in the record, so a field lands here only once it works end to end.
SUPPORTED_PARAMETERS = [
    "frequency_penalty",
    "include_reasoning",
    "logit_bias",
    "logprobs",
    "max_tokens",
    "min_p",
    "parallel_tool_calls",
    "presence_penalty",
    "reasoning",
    "repetition_penalty",
    "response_format",
    "seed",
    "stop",
    "structured_outputs",
    "temperature",
    "tool_choice",
    "tools",
    "top_k",
    "top_logprobs",
    "top_p",
]

_DTYPE_NAMES = {"auto": "bf16", "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
_QUANT_NAMES = {"fp8": "fp8", "awq": "int4", "gptq": "int4", "bitsandbytes": "int4", "compressed-tensors": "unknown"}


def price(value: float) -> str:
    """USD per token as OpenRouter writes it: plain decimal, no exponent, no trailing zeros."""
    text = f"{value:.12f}".rstrip("0").rstrip(".")
    return text or "0"


def quantization(settings: Settings) -> str:
    if settings.engine.quantization:
        return _QUANT_NAMES.get(settings.engine.quantization, "unknown")
    return _DTYPE_NAMES.get(settings.engine.dtype, "unknown")


def pricing(settings: Settings) -> dict[str, str]:
    p = settings.pricing
    out = {"prompt": price(p.prompt), "completion": price(p.completion)}
    if p.input_cache_read is not None:
        out["input_cache_read"] = price(p.input_cache_read)
    return out


def model_record(settings: Settings, context_length: int) -> dict[str, Any]:
    """The ``/api/v1/models`` entry."""
    model_id = settings.model.served_name
    author, _, slug = model_id.partition("/")
    s = settings.sampling
    return {
        "id": model_id,
        "canonical_slug": OPENROUTER_MODEL_ID,
        "hugging_face_id": HF_REPO,
        "name": NAME,
        "created": CREATED,
        "description": DESCRIPTION,
        "context_length": context_length,
        "architecture": ARCHITECTURE,
        "pricing": pricing(settings),
        "top_provider": {
            "context_length": context_length,
            "max_completion_tokens": settings.sampling.max_tokens,
            "is_moderated": False,
        },
        "per_request_limits": None,
        "supported_parameters": SUPPORTED_PARAMETERS,
        "default_parameters": {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k},
        "supported_voices": None,
        "expiration_date": None,
        "links": {"details": f"/api/v1/models/{author}/{slug}/endpoints" if slug else f"/api/v1/models/{model_id}/endpoints"},
        "reasoning": {"mandatory": False, "default_enabled": settings.reasoning.default_enabled, "supports_max_tokens": True},
    }


def openai_model(settings: Settings, context_length: int) -> dict[str, Any]:
    """The ``/v1/models`` entry in OpenAI's shape (plus the context length, which clients use)."""
    return {
        "id": settings.model.served_name,
        "object": "model",
        "created": CREATED,
        "owned_by": "nousresearch",
        "context_length": context_length,
    }


def endpoints_record(settings: Settings, context_length: int, ready: bool, perf: dict[str, Any]) -> dict[str, Any]:
    """``/api/v1/models/{author}/{slug}/endpoints``: this server is the model's one endpoint."""
    endpoint = {
        "name": f"{settings.provider_name} | {settings.model.served_name}",
        "model_id": settings.model.served_name,
        "model_name": NAME,
        "context_length": context_length,
        "pricing": pricing(settings),
        "provider_name": settings.provider_name,
        "tag": settings.provider_name,
        "quantization": quantization(settings),
        "max_completion_tokens": settings.sampling.max_tokens,
        "max_prompt_tokens": None,
        "supported_parameters": SUPPORTED_PARAMETERS,
        "status": 0 if ready else -1,
        "supports_implicit_caching": settings.engine.enable_prefix_caching,
        "supports_tool_choice": {"auto": True, "none": True, "required": True, "function": True},
        "supports_diarization": False,
        "native_tools": {},
        "service_tier": None,
        **perf,
    }
    return {
        "id": settings.model.served_name,
        "name": NAME,
        "created": CREATED,
        "description": DESCRIPTION,
        "architecture": ARCHITECTURE,
        "endpoints": [endpoint],
    }
