#!/usr/bin/env python3
"""Build a tiny checkpoint whose greedy output is a script: the coding-agent tests' model.

A random model cannot drive an agent, so this one is built by hand. It has the tiny model's
architecture, tokenizer and chat template (``make_tiny_model.py``) and weights that make greedy
decoding follow fixed texts while the real engine, tokenizer, chat template and parsers run:

- the answer depends on which *marker* words the conversation contains: an agent's marker in the
  user's prompt (`` Uruguay`` for Claude Code, `` Mongolia`` for Codex, `` Fiji`` for Hermes Agent)
  makes the model call that agent's shell tool with ``echo Tanzania``; once the conversation
  contains a tool result (the template renders it in ``<tool_response>``), it answers
  ``The command printed Tanzania.``; with no marker it answers ``Hello from the scripted model!``
- how: layer 0 has two attention heads whose query is the same at every position and whose key
  is large only on marker tokens, so each position reads a *flag* (the marker seen, if any); the
  MLPs and layer 1 add nothing. The final read-out maps the current token to the next token of its
  script (each script token has its own one-hot dimension, so every token of every script is a
  distinct token id: the scripts are tokenized with only unused ids, which the byte-level BPE
  allows by splitting text differently), and the prompt's last token (the ``\\n`` after the
  assistant header) to the first token of the script the flags choose.

    python scripts/make_agent_model.py --out models/tiny-hermes-agent
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_tiny_model as tiny  # noqa: E402

# The marker words (one token each, with their leading space) and what each selects.
AGENTS = {
    "claude": " Uruguay",
    "codex": " Mongolia",
    "hermes": " Fiji",
}
DONE_MARKER = "<tool_response>"  # an added token: only a tool result renders it
# The agents' tool calls, as segments: a string all agents share, or {agent: its own string}.
# Each agent calls its own shell tool as the agent defines it (Claude Code: Bash with command;
# Codex: exec_command with cmd; Hermes Agent: terminal with command), all running
# `echo Tanzania`. Shared segments share their tokens; where the agents' texts part, the agent's
# flag picks the branch.
TOOL_CALL_SEGMENTS: list[str | dict[str, str]] = [
    '<tool_call>\n{"name": "',
    {"claude": "Bash", "codex": "exec_command", "hermes": "terminal"},
    '","arguments":{"',
    {"claude": "command", "codex": "cmd", "hermes": "command"},
    '":"echo Tanzania"}}\n</tool_call>',
]
# (The spacing varies so that the JSON's repeated characters can come from distinct tokens.)
DONE_TEXT = "The command printed Tanzania."
PLAIN_TEXT = "Hello from the scripted model!"
START_TOKEN = 198  # "\n": the last token of every rendered prompt (after the assistant header)
EOT = 128009  # <|eot_id|>: ends the answer

HIDDEN = 512
HEAD_DIM = 32
# Weights of the read-out. A script's next token (NEXT) beats whatever a flag adds anywhere. At a
# branch, the agent's own branch gets BRANCH + BRANCH_FLAG (= NEXT) against BRANCH for the others.
# After the prompt, the first token: done's (DONE) beats an agent's (AGENT), which beats the
# BRANCH_FLAG an agent's flag adds to its branch tokens everywhere, which beats the plain answer.
NEXT, BRANCH, DONE, AGENT, BRANCH_FLAG, PLAIN = 40.0, 30.0, 20.0, 15.0, 10.0, 5.0
SCORE = 40.0  # attention logit on a marker (every other position: 0)


def tool_call_text(agent: str) -> str:
    """The whole tool call one agent's script makes."""
    return "".join(seg if isinstance(seg, str) else seg[agent] for seg in TOOL_CALL_SEGMENTS)


def vocab_strings(tokenizer) -> dict[str, list[int]]:
    """Every plain (non-added) token's text → its ids, for texts of printable ASCII."""
    out: dict[str, list[int]] = {}
    for tid in range(tokenizer.vocab_size):
        text = tokenizer.decode([tid])
        if text and text.isascii() and "\ufffd" not in text:
            out.setdefault(text, []).append(tid)
    return out


def tokenize_unused(text: str, strings: dict[str, list[int]], used: set[int]) -> list[int]:
    """``text`` as token ids none of which is in ``used`` (and adds them): the longest unused
    match at each position, backtracking when a position cannot be covered."""
    longest = max(len(s) for s in strings)

    def solve(pos: int, taken: set[int]) -> list[int] | None:
        if pos == len(text):
            return []
        for end in range(min(len(text), pos + longest), pos, -1):
            for tid in strings.get(text[pos:end], []):
                if tid in taken:
                    continue
                rest = solve(end, taken | {tid})
                if rest is not None:
                    return [tid, *rest]
        return None

    ids = solve(0, set(used))
    if ids is None:
        raise SystemExit(f"cannot tokenize {text!r} with unused token ids")
    used.update(ids)
    return ids


def scripts(tokenizer) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Each script as token ids ending in EOT (one per agent, sharing the tokens of shared
    segments and of equal branches; then done and plain) and the marker token ids."""
    markers = {}
    for name, word in [*AGENTS.items(), ("done", DONE_MARKER)]:
        ids = tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise SystemExit(f"marker {word!r} is not one token: {ids}")
        markers[name] = ids[0]
    strings = vocab_strings(tokenizer)
    used = {START_TOKEN, EOT, *markers.values()}
    paths: dict[str, list[int]] = {agent: [] for agent in AGENTS}
    for seg in TOOL_CALL_SEGMENTS:
        if isinstance(seg, str):
            ids = tokenize_unused(seg, strings, used)
            for path in paths.values():
                path.extend(ids)
            continue
        branch: dict[str, list[int]] = {}
        for agent, text in seg.items():
            if text not in branch:
                branch[text] = tokenize_unused(text, strings, used) if text else []
            paths[agent].extend(branch[text])
    out = {agent: [*ids, EOT] for agent, ids in paths.items()}
    # Tags such as <tool_call> come out as their text in plain tokens, not as the added token:
    # the server's parser reads text, and no token may stand at two places of the scripts.
    out["done"] = [*tokenize_unused(DONE_TEXT, strings, used), EOT]
    out["plain"] = [*tokenize_unused(PLAIN_TEXT, strings, used), EOT]
    return out, markers


def build_weights(script_ids: dict[str, list[int]], markers: dict[str, int]) -> dict:
    import torch

    vocab, h, hd = tiny.ARCH["vocab_size"], HIDDEN, HEAD_DIM
    nh, nkv, inter = 4, 2, 64
    # Residual dimensions: 0 constant; then one per script token (and the start token); then one
    # per marker (in the embedding) and one per flag (written by attention).
    dims: dict[int, int] = {}
    for tid in [START_TOKEN, *(t for ids in script_ids.values() for t in ids[:-1])]:
        dims.setdefault(tid, len(dims) + 1)
    marker_dim = {name: len(dims) + 1 + i for i, name in enumerate(markers)}
    flag_dim = {name: len(dims) + 1 + len(markers) + i for i, name in enumerate(markers)}
    if max(flag_dim.values()) >= h:
        raise SystemExit(f"hidden size {h} too small for {max(flag_dim.values()) + 1} dimensions")

    embed = torch.zeros(vocab, h)
    embed[:, 0] = 1.0
    for tid, d in dims.items():
        embed[tid, d] = 1.0
    for name, tid in markers.items():
        embed[tid, marker_dim[name]] = 1.0

    # RMSNorm makes a token with one extra unit dimension read sqrt(h/2) on each of its two
    # dimensions (a token with only the constant: sqrt(h) on it).
    unit = (h / 2) ** 0.5
    # The query and key sit on the lowest RoPE frequency (rotate-half pair 15 / 31), which turns
    # by well under a radian across the whole context: the score barely depends on distance.
    slot = hd // 2 - 1
    q = torch.zeros(nh * hd, h)
    k = torch.zeros(nkv * hd, h)
    v = torch.zeros(nkv * hd, h)
    o = torch.zeros(h, nh * hd)
    # kv head 0 (query head 0): which agent; kv head 1 (query head 2): done.
    groups = {0: [n for n in markers if n != "done"], 1: ["done"]}
    for kv, names in groups.items():
        head = kv * (nh // nkv)
        q[head * hd + slot, 0] = 1.0
        for j, name in enumerate(names):
            k[kv * hd + slot, marker_dim[name]] = SCORE * hd**0.5 / (unit * unit)
            v[kv * hd + j, marker_dim[name]] = 1.0
            o[flag_dim[name], head * hd + j] = 1.0 / unit

    lm = torch.zeros(vocab, h)
    lm[EOT, 0] = 0.1  # a state no script knows ends the answer
    agents = [n for n in script_ids if n in AGENTS]
    edges: dict[int, dict[int, list[str]]] = {}  # token → next token → the agents taking it
    for agent in agents:
        ids = script_ids[agent]
        for cur, nxt in itertools.pairwise(ids):
            edges.setdefault(cur, {}).setdefault(nxt, []).append(agent)
    for cur, nexts in edges.items():
        if len(nexts) == 1:
            lm[next(iter(nexts)), dims[cur]] += NEXT
            continue
        for nxt, takers in nexts.items():
            lm[nxt, dims[cur]] += BRANCH
            for agent in takers:
                lm[nxt, flag_dim[agent]] += BRANCH_FLAG
    for name in ("done", "plain"):
        ids = script_ids[name]
        for cur, nxt in itertools.pairwise(ids):
            lm[nxt, dims[cur]] += NEXT
    first = script_ids[agents[0]][0]  # the agents' scripts start alike
    for agent in agents:
        lm[first, flag_dim[agent]] += AGENT
    lm[script_ids["done"][0], flag_dim["done"]] += DONE
    lm[script_ids["plain"][0], dims[START_TOKEN]] += PLAIN

    sd = {"model.embed_tokens.weight": embed}
    for i in range(2):
        p = f"model.layers.{i}."
        first = i == 0
        sd[p + "self_attn.q_proj.weight"] = q if first else torch.zeros_like(q)
        sd[p + "self_attn.k_proj.weight"] = k if first else torch.zeros_like(k)
        sd[p + "self_attn.v_proj.weight"] = v if first else torch.zeros_like(v)
        sd[p + "self_attn.o_proj.weight"] = o if first else torch.zeros_like(o)
        sd[p + "mlp.gate_proj.weight"] = torch.zeros(inter, h)
        sd[p + "mlp.up_proj.weight"] = torch.zeros(inter, h)
        sd[p + "mlp.down_proj.weight"] = torch.zeros(h, inter)
        sd[p + "input_layernorm.weight"] = torch.ones(h)
        sd[p + "post_attention_layernorm.weight"] = torch.ones(h)
    sd["model.norm.weight"] = torch.ones(h)
    sd["lm_head.weight"] = lm
    return {name: t.to(torch.float32) for name, t in sd.items()}


def build(out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tiny.build(out, seed=0, plain_think=False, tokenizer_json=None)  # tokenizer, template, config
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    script_ids, markers = scripts(tokenizer)
    arch = {**tiny.ARCH, "hidden_size": HIDDEN, "intermediate_size": 64, "torch_dtype": "float32"}
    (out / "config.json").write_text(json.dumps(arch, indent=2) + "\n")
    for f in out.glob("*.safetensors"):
        f.unlink()
    tiny.save_sharded(build_weights(script_ids, markers), out)
    stamp = {"builder_sha256": digest(), "scripts": {n: tokenizer.decode(ids) for n, ids in script_ids.items()}}
    (out / "tiny_model.json").write_text(json.dumps(stamp, indent=2) + "\n")


def digest() -> str:
    import hashlib

    h = hashlib.sha256(tiny.builder_digest().encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def up_to_date(out: Path) -> bool:
    stamp = out / "tiny_model.json"
    return stamp.exists() and json.loads(stamp.read_text()).get("builder_sha256") == digest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE.parent / "models" / "tiny-hermes-agent")
    ap.add_argument("--if-needed", action="store_true", help="skip when the folder was built by this same builder")
    args = ap.parse_args()
    if args.if_needed and up_to_date(args.out):
        print(f"agent model up to date: {args.out}")
        return
    if args.out.exists():
        shutil.rmtree(args.out)
    build(args.out)
    print(f"agent model written: {args.out}")


if __name__ == "__main__":
    main()
