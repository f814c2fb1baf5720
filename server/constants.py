"""Facts the whole server relies on, each stated once: model ids, OpenRouter's listed prices, the
reasoning-effort levels and their budget shares, and the shape of the ids we hand out.
(docs/OPENROUTER.md says where each comes from.)"""

from __future__ import annotations

import secrets
import string
from typing import Literal, get_args

# The id OpenRouter lists for the model (what clients send today) and the Hugging Face repos.
OPENROUTER_MODEL_ID = "nousresearch/hermes-4-70b"
HF_REPO = "NousResearch/Hermes-4-70B"
HF_REPO_FP8 = "NousResearch/Hermes-4-70B-FP8"

# USD per token as OpenRouter lists them for this model; the default configured prices too.
OPENROUTER_PRICE_PROMPT = 0.00000013
OPENROUTER_PRICE_COMPLETION = 0.0000004

# OpenRouter's reasoning effort levels, and the share of max_tokens each may spend on reasoning
# (OpenRouter's documented ratios; "none" turns reasoning off).
Effort = Literal["xhigh", "max", "high", "medium", "low", "minimal", "none"]
EFFORT_SHARE: dict[str, float] = {"xhigh": 0.95, "max": 0.95, "high": 0.8, "medium": 0.5, "low": 0.2, "minimal": 0.1, "none": 0.0}
DEFAULT_EFFORT = "medium"
assert set(EFFORT_SHARE) == set(get_args(Effort)), "every effort level needs a share"

_ALNUM = string.ascii_letters + string.digits


def random_id(prefix: str, length: int) -> str:
    """``prefix`` + ``length`` random alphanumerics (generation, tool-call and response ids)."""
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))
