"""Legacy Completions adapter: POST /v1/completions and /api/v1/completions.

The prompt is sent to the model as is (no template). When the request carries a reasoning field
(``reasoning``, ``reasoning_effort``, ``include_reasoning``) or the prompt ends inside an open
``<think>``, the output is split like chat: ``<think>…</think>`` goes to the choice's
``reasoning``, the rest to ``text``, and the thinking budget applies. Otherwise ``text`` is the
raw output, so prompt-completion tools (evaluation harnesses, logprob scoring) see every byte.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import APIRouter, Request

from server.engine.base import TokenLogprob
from server.jsonio import JSONResponse
from server.protocol.openrouter import KEEPALIVE, ChunkEncoder, completion_logprobs, usage_block
from server.protocol.requests import CompletionRequest
from server.routes.adapter import Adapter
from server.routes.common import client_gone, openrouter_info, response_base
from server.serving.events import AnswerText, Piece, ReasoningText
from server.serving.plan import GenerationPlan
from server.state import app_state

PATHS = ("/v1/completions", "/api/v1/completions")
router = APIRouter()
_OBJECT = "text_completion"


@router.post(PATHS[0])
@router.post(PATHS[1])
async def completions(request: Request, req: CompletionRequest) -> Any:
    state = app_state(request)
    core = state.core()
    plan = await core.plan(req.task(openrouter_info(request, req, ADAPTER.name)))
    generation = await core.open(plan)
    base = response_base(state, plan)
    headers = {"X-Generation-Id": plan.info.gen_id}
    want_logprobs = req.logprobs is not None
    if req.stream:
        enc = ChunkEncoder(base, _CompletionChunks(plan, want_logprobs))
        return generation.sse(generation.stream(enc), headers, KEEPALIVE)
    out = await generation.collect(client_gone(request))
    choice = {
        "index": 0,
        "text": out.text,
        "finish_reason": out.finish.reason,
        "native_finish_reason": out.finish.native,
        "logprobs": completion_logprobs(out.logprobs, plan.top_logprobs, 0) if want_logprobs else None,
        "reasoning": out.reasoning or None,
    }
    return JSONResponse({**base, "object": _OBJECT, "choices": [choice], "usage": usage_block(out.usage)}, headers=headers)


class _CompletionChunks:
    """Legacy completion chunks: the answer in ``text``, reasoning beside it."""

    obj = _OBJECT
    empty: ClassVar[dict[str, Any]] = {"text": "", "reasoning": None}
    error_fields: ClassVar[dict[str, Any]] = {"text": ""}

    def __init__(self, plan: GenerationPlan, want_logprobs: bool) -> None:
        self.top_n, self.want_logprobs = plan.top_logprobs, want_logprobs
        self.offset = 0  # characters of output so far (text_offset of the next token)

    def logprobs(self, items: list[TokenLogprob]) -> Any:
        lp = completion_logprobs(items, self.top_n, self.offset) if self.want_logprobs else None
        self.offset += sum(len(it.token) for it in items)
        return lp

    def pieces(self, piece: Piece) -> list[dict[str, Any]]:
        if isinstance(piece, ReasoningText):
            return [{"text": "", "reasoning": piece.text}]
        assert isinstance(piece, AnswerText)  # no tool parsing on this route
        return [{"text": piece.text, "reasoning": None}]


ADAPTER = Adapter(name="completions", api_type="completions", paths=PATHS, router=router)
