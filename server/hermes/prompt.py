"""Messages → prompt token ids with the model's own chat template.

The checkpoint's template and tokenizer are used unchanged (transformers renders the Jinja).
What this module adds is what the Hermes 4 template leaves to the caller:
- the thinking system prompt present exactly once when reasoning is on, whatever system
  message the caller sent (templates differ on whether a caller's system replaces it);
- OpenAI message shapes normalised to what HF templates expect (text parts joined, ``developer``
  as ``system``, tool-call arguments as objects, prior reasoning kept only under keep-CoT).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from server.errors import bad_request
from server.hermes.parser import ends_inside_reasoning

THINKING_PROMPT = (
    "You are a deep thinking AI, you may use extremely long chains of thought to deeply consider the "
    "problem and deliberate with yourself via systematic reasoning processes to help come to a correct "
    "solution prior to answering. You should enclose your thoughts and internal monologue inside "
    "<think> </think> tags, and then provide your solution or response to the problem."
)
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|end_of_text|>")


def _byte_decoder() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    table: dict[int, str] = bytes_to_unicode()  # type: ignore[no-untyped-call]
    return {ch: b for b, ch in table.items()}


_BYTE_DECODER = _byte_decoder()


@dataclass
class RenderedPrompt:
    token_ids: list[int]
    text: str
    # An assistant prefill that leaves ``<think>`` open: the output starts inside reasoning.
    opens_reasoning: bool = False


def load_tokenizer(path: str, revision: str | None = None) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, revision=revision)


# Media content parts of the three APIs (chat, Responses, Messages), by what they hold.
MEDIA_PARTS = {
    "image_url": "image",
    "input_image": "image",
    "image": "image",
    "input_audio": "audio",
    "file": "file",
    "input_file": "file",
    "document": "document",
}


def omitted_media(kind: object) -> str | None:
    """What a media part of a tool's output becomes in the prompt (None: ``kind``, a part's
    ``type`` as the client sent it, is no media).

    The model reads text only. A client's own image is a 400 it can act on, but an agent's tool
    output (Claude Code reading a screenshot, Codex's view_image) goes back with every later turn
    of the session, so a 400 would end the session: the model is told instead."""
    media = MEDIA_PARTS.get(kind) if isinstance(kind, str) else None
    return f"[{media} omitted: this model reads text only]" if media else None


def content_text(content: Any, where: str, tool_output: bool = False) -> str:
    """OpenAI content (string or list of parts) → text. Non-text parts: 400 (text-only model),
    except media in a tool's output (``omitted_media``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
        note = omitted_media(kind) if tool_output else None
        if note is not None:
            texts.append(note)
            continue
        if kind != "text":
            raise bad_request(f"{where}.content.{i}: content part type {kind!r} is not supported by this text-only model")
        texts.append(part["text"] if isinstance(part, dict) else part.text)
    return "".join(texts)


class PromptRenderer:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.stop_token_ids = [
            tid for tid in (tokenizer.convert_tokens_to_ids(t) for t in END_OF_TURN_TOKENS) if isinstance(tid, int) and tid >= 0
        ]
        self.bos_token_id: int | None = tokenizer.bos_token_id
        self.vocab_size = len(tokenizer)
        self._added = {int(i) for i in tokenizer.added_tokens_decoder}
        # Unbounded: at most one entry per vocabulary token (~128k, a few MB). A 64k LRU kept
        # missing on output spread over the whole vocabulary (2 % of the API process at 32 streams
        # on the random test model, through the reasoning-token count).
        self.token_bytes = cache(self._token_bytes)

    def _token_bytes(self, token_id: int) -> bytes:
        """The exact bytes a token stands for (a token may hold part of a UTF-8 character).

        Llama 3 is a byte-level BPE: each character of a vocabulary entry maps to one byte
        through GPT-2's byte table; added tokens are literal text."""
        token = self.tokenizer.convert_ids_to_tokens(token_id)
        if token is None:
            return b""
        if token_id in self._added:
            return str(token).encode()
        try:
            return bytes(_BYTE_DECODER[ch] for ch in token)
        except KeyError:
            return str(token).encode()

    @property
    def think_is_one_token(self) -> bool:
        """True when ``<think>`` and ``</think>`` are single added tokens (vLLM's own thinking
        budget can then see them); False when the model spells them as plain text."""
        return all(len(self.tokenizer.encode(tag, add_special_tokens=False)) == 1 for tag in ("<think>", "</think>"))

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=False))

    @classmethod
    def from_path(cls, path: str | Path, revision: str | None = None) -> PromptRenderer:
        return cls(load_tokenizer(str(path), revision))

    # ---- chat -------------------------------------------------------------------------------
    def render_chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        thinking: bool = False,
        keep_cots: bool = False,
    ) -> RenderedPrompt:
        msgs = [normalise_message(m, i, keep_cots) for i, m in enumerate(messages)]
        prefill = bool(msgs) and msgs[-1]["role"] == "assistant"
        text = self._render(msgs, tools, thinking, keep_cots, prefill)
        if thinking:
            count = text.count(THINKING_PROMPT)
            if count != 1:
                msgs = with_thinking_prompt_once(msgs)
                text = self._render(msgs, tools, thinking, keep_cots, prefill)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return RenderedPrompt(token_ids=list(ids), text=text, opens_reasoning=prefill and ends_inside_reasoning(text))

    def _render(
        self, msgs: list[dict[str, Any]], tools: list[dict[str, Any]] | None, thinking: bool, keep_cots: bool, prefill: bool
    ) -> str:
        try:
            text = self.tokenizer.apply_chat_template(
                msgs,
                tools=tools or None,
                tokenize=False,
                add_generation_prompt=not prefill,
                continue_final_message=prefill,
                thinking=thinking,
                keep_cots=keep_cots,
            )
        except Exception as exc:  # a template raising on odd input is the caller's input problem
            raise bad_request(f"messages could not be rendered with the model's chat template: {exc}") from exc
        return str(text)

    # ---- raw completions ----------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        """Legacy completions: the text as given, with BOS unless the caller already wrote it."""
        ids = list(self.tokenizer.encode(prompt, add_special_tokens=False))
        if self.bos_token_id is not None and (not ids or ids[0] != self.bos_token_id):
            ids.insert(0, self.bos_token_id)
        return ids


def normalise_message(msg: dict[str, Any], index: int, keep_cots: bool) -> dict[str, Any]:
    where = f"messages.{index}"
    role = msg.get("role")
    out: dict[str, Any] = {"role": "system" if role == "developer" else role}
    content = content_text(msg.get("content"), where, tool_output=role == "tool")
    if role == "assistant":
        prior = msg.get("reasoning") or msg.get("reasoning_content") or _details_text(msg.get("reasoning_details"))
        if keep_cots and prior and "<think>" not in content:
            content = f"<think>\n{prior}\n</think>\n{content}"
        calls = msg.get("tool_calls") or []
        if calls:
            out["tool_calls"] = [_tool_call_for_template(c, f"{where}.tool_calls.{j}") for j, c in enumerate(calls)]
    if role == "tool":
        out["tool_call_id"] = msg.get("tool_call_id")
    if msg.get("name"):
        out["name"] = msg["name"]
    out["content"] = content
    return out


def _details_text(details: Any) -> str:
    if not isinstance(details, list):
        return ""
    return "".join(d.get("text") or "" for d in details if isinstance(d, dict) and d.get("type") == "reasoning.text")


def _tool_call_for_template(call: dict[str, Any], where: str) -> dict[str, Any]:
    fn = call.get("function") or {}
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise bad_request(f"{where}.function.arguments is not valid JSON: {exc.msg}") from exc
    return {"id": call.get("id"), "type": "function", "function": {"name": fn.get("name"), "arguments": args or {}}}


def with_thinking_prompt_once(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make the caller's system turn carry the thinking prompt exactly once.

    Called only when rendering with ``thinking=True`` did not yield exactly one copy: either the
    template let the caller's system message replace it (add it in front), or the caller sent it
    and the template added it too (remove the caller's copy).
    """
    msgs = [dict(m) for m in msgs]
    if msgs and msgs[0]["role"] == "system":
        own = msgs[0]["content"]
        if THINKING_PROMPT in own:
            msgs[0]["content"] = own.replace(THINKING_PROMPT, "").strip()
        else:
            msgs[0]["content"] = f"{THINKING_PROMPT}\n\n{own}" if own else THINKING_PROMPT
    else:
        msgs.insert(0, {"role": "system", "content": THINKING_PROMPT})
    return msgs
