"""The profile's sections for the serving layer around the engine — reasoning defaults, affinity
routing, batches, the gateway, the Responses and Messages APIs, the hardware a profile is written
for — and the base every section shares. ``Settings`` (server/settings.py) holds them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReasoningSettings(Section):
    default_enabled: bool = Field(
        False, description="Reasoning when a request says nothing about it (OpenRouter: off for Hermes 4)."
    )
    keep_cots: bool = Field(
        False, description="Keep earlier assistant turns' reasoning in the prompt (Hermes' keep_cots; off by default)."
    )


class RoutingSettings(Section):
    """How requests are spread over data-parallel replicas (engine.data_parallel_size > 1)."""

    affinity: bool = Field(
        True,
        description="Send a session's turns, and prompts that share leading blocks, to the replica that holds "
        "their prefix cache (bounded by load). Off: vLLM's balancer places each request by load alone.",
    )
    load_factor: float = Field(
        1.25,
        ge=1.0,
        description="A replica whose running + waiting would pass this times the mean is skipped for the "
        "request, which spills to the least loaded replica (consistent hashing with bounded loads).",
    )
    spill_floor: int = Field(
        8,
        ge=1,
        description="A replica with fewer requests than this never spills a session it holds: lightly loaded, one "
        "more sequence costs it little, while a spill prefills the whole history again elsewhere.",
    )
    prefix_blocks: int = Field(
        32, ge=1, description="Leading 16-token KV blocks of the prompt hashed for affinity when no session is named."
    )
    min_prefix_blocks: int = Field(
        4, ge=1, description="Prompts shorter than this many blocks have no prefix affinity (nothing worth keeping)."
    )
    session_ttl_seconds: float = Field(
        1800.0, gt=0, description="A session or prefix unused this long is forgotten (its next turn is placed anew)."
    )


class BatchSettings(Section):
    """Batches (OpenAI's /v1/batches, OpenRouter's /api/beta/batches): run in the background
    from the database, at the lowest priority, within a share of the slots."""

    enabled: bool = Field(True, description="Accept batches and run them.")
    share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Of the gateway's generation slots, the share one server's batch runner may fill: "
        "the rest stays free for interactive requests.",
    )
    discount: float = Field(
        0.5, ge=0, le=1, description="What a batch request costs, as a share of the price (OpenAI and OpenRouter: half)."
    )
    max_requests: int = Field(50_000, ge=1, description="Requests one batch may hold.")
    max_window_hours: float = Field(24 * 7, gt=0, description="The longest completion window accepted.")


class GatewaySettings(Section):
    max_in_flight: int | None = Field(
        None,
        ge=1,
        description="Generation requests running at once; None: what the engine batches (max_num_seqs x "
        "data_parallel_size), twice that under priority scheduling so the engine's queue can order tiers.",
    )
    max_queue: int | None = Field(
        None, ge=0, description="Requests allowed to wait for a slot; beyond them an immediate 429. None: 2 x max_in_flight."
    )
    max_queue_wait_seconds: float = Field(
        60.0, gt=0, description="A request that gets no slot within this long is answered 429 with a Retry-After."
    )
    request_timeout_seconds: float = Field(
        600.0, gt=0, description="A generation (queueing included) running longer than this ends with 408."
    )
    drain_timeout_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM, in-flight requests get this long to finish before they are ended."
    )
    metrics_require_auth: bool = Field(False, description="Require a key for /metrics.")
    metrics_per_key: bool = Field(
        True,
        description="Label request counts with the key's label (one series per key and status: turn off with very many keys).",
    )
    models_require_auth: bool = Field(
        False, description="Require a key for the model listings (OpenRouter serves them without one)."
    )


class ResponsesSettings(Section):
    """The Responses API's optional state (OpenRouter's is stateless)."""

    store: bool = Field(
        False,
        description="Keep responses sent with store: true in the database, for previous_response_id and GET/DELETE /v1/responses/{id}.",
    )
    ttl_hours: float = Field(720.0, gt=0, description="How long a stored response is kept.")


class MessagesSettings(Section):
    """The Anthropic Messages API."""

    model_patterns: list[str] = Field(
        default_factory=list,
        description="Other model names served by this model on /v1/messages (globs, e.g. 'claude-*' for tools that only send Anthropic names).",
    )


class HardwareSettings(Section):
    """The machine a profile is written for; `plan` uses it when nvidia-smi is not there."""

    gpus: int | None = Field(None, ge=1, description="GPUs of the machine the profile is written for.")
    gpu_mem_gib: float | None = Field(None, gt=0, description="Memory per GPU as nvidia-smi reports it, GiB.")
