"""The shipped workloads: seeded generators of requests, so nothing needs downloading.

``--workload NAME[:key=value,...]``. Every generator takes the prompt and output lengths of
``--prompt-tokens`` / ``--output-tokens`` and the ``--seed``, and gives every target of a level the
same requests (a fair A/B). A request belongs to a *chain* (a conversation); a chain's turns go in
order, each only after the one before it has ended, as a user reads a reply before answering.

- ``plain``: independent single-turn requests (the default).
- ``multi-turn:turns=4,followup=64``: conversations of ``turns`` requests. Each turn resends the
  whole history (the first prompt, then the assistant's replies and ``followup``-token user
  messages), so its prompt starts with the previous turn's: a server with prefix caching shows it
  in ``cached_tokens`` and in a lower time to first token for later turns. The replies in the
  history are generated text of ``--output-tokens`` length, not the server's own answers, so both
  targets of an A/B run see the same prompts.
- ``long-context:share=0.1,min=8000,max=100000``: a ``share`` of requests get prompts drawn
  uniformly from ``min``..``max`` tokens, the rest ``--prompt-tokens``.
- ``reasoning:share=0.5,budget=1024``: a ``share`` of requests think, with OpenRouter's
  ``reasoning.max_tokens`` budget (their ``max_tokens`` is the budget plus the output length); the
  rest send ``reasoning.enabled: false``.
- ``sessions:turns=4,system=1500,followup=64,think=0.5,named=1``: agent sessions. Each session
  (a chain) has its own ``system``-token system prompt and sends ``turns`` requests, each resending
  the whole growing history after a pause of ``think`` seconds (the user, or the agent's tools);
  with ``named=1`` each request names its session (OpenRouter's ``session_id``), with 0 the server
  sees only the prompts. The token statistics show the cached share and time to first token per
  turn: what a server's prefix cache (and, with data parallelism, its routing) keeps of a session.
- ``tools:share=0.5,choice=auto``: a ``share`` of conversations offer two tools (bounded schemas)
  and ask for a forecast (``tool_choice`` ``auto`` or ``required``), then send the tool's result
  back for the answer: two requests; the rest are plain requests.

Prompts are random common words, about one Llama 3 token each (server/bench/words.py).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from server.bench.load import Mix, Spec, Workload
from server.bench.words import WORDS

# Turns of a chain are spread this many chains apart in the request order, so an open-loop run
# mixes conversations' turns the way many users do instead of sending one conversation at a time.
CHAIN_WINDOW = 8
CITIES = ["Paris", "Tokyo", "Lagos", "Lima", "Oslo", "Cairo", "Austin", "Hanoi"]
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
SEARCH = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "maxLength": 64},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["query"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Forecast for a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "search_docs", "description": "Search the manuals", "parameters": SEARCH}},
]

# Each workload's options and their defaults; one source for parsing, checking and the report.
OPTIONS: dict[str, dict[str, float | str]] = {
    "plain": {},
    "multi-turn": {"turns": 4, "followup": 64},
    "long-context": {"share": 0.1, "min": 8000, "max": 100000},
    "reasoning": {"share": 0.5, "budget": 1024},
    "tools": {"share": 0.5, "choice": "auto"},
    "sessions": {"turns": 4, "system": 1500, "followup": 64, "think": 0.5, "named": 1},
}


def parse_mix(spec: str) -> Mix:
    """``NAME[:key=value,...]`` → a Mix with every option filled in; ValueError says what is wrong."""
    name, _, rest = spec.partition(":")
    if name not in OPTIONS:
        raise ValueError(f"unknown workload {name!r}: use one of {', '.join(OPTIONS)}")
    values = dict(OPTIONS[name])
    for item in filter(None, rest.split(",")):
        key, _, raw = item.partition("=")
        if key not in values:
            known = ", ".join(OPTIONS[name]) or "none"
            raise ValueError(f"workload {name} has no option {key!r} (options: {known})")
        default = values[key]
        try:
            values[key] = raw if isinstance(default, str) else type(default)(float(raw))
        except ValueError as exc:
            raise ValueError(f"workload {name}: {key} must be a number, not {raw!r}") from exc
    _check(name, values)
    return Mix(name, tuple(sorted(values.items())))


def _check(name: str, v: dict[str, float | str]) -> None:
    share = v.get("share", 0.0)
    if isinstance(share, float) and not 0 <= share <= 1:
        raise ValueError(f"workload {name}: share must be between 0 and 1")
    if name == "multi-turn" and (int(v["turns"]) < 1 or int(v["followup"]) < 1):
        raise ValueError("workload multi-turn: turns and followup must be at least 1")
    if name == "long-context" and not 1 <= int(v["min"]) <= int(v["max"]):
        raise ValueError("workload long-context: needs 1 <= min <= max")
    if name == "reasoning" and int(v["budget"]) < 1:
        raise ValueError("workload reasoning: budget must be at least 1")
    if name == "tools" and v["choice"] not in ("auto", "required"):
        raise ValueError("workload tools: choice is auto or required")
    if name == "sessions" and (int(v["turns"]) < 1 or int(v["system"]) < 1 or float(v["think"]) < 0):
        raise ValueError("workload sessions: turns and system must be at least 1, think at least 0")


def describe(mix: Mix) -> str:
    """One line for the report: the workload and its options."""
    opts = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in mix.options)
    return mix.name + (f":{opts}" if opts else "")


def make_specs(workload: Workload, n: int, salt: int = 0) -> list[Spec]:
    """``n`` requests of the workload, the same for every target of a load level (fair A/B),
    in the order an open loop sends them."""
    rng = random.Random(workload.seed * 1_000_003 + salt)
    chains: list[list[Spec]] = []
    total = 0
    while total < n:
        chain = GENERATORS[workload.mix.name](workload, rng, len(chains))
        chains.append(chain)
        total += len(chain)
    ordered = sorted((spec for chain in chains for spec in chain), key=lambda s: (s.chain + s.turn * CHAIN_WINDOW, s.turn))
    return ordered[:n]


def _words(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, tokens)))


def _user(rng: random.Random, chain: int, tokens: int) -> dict[str, Any]:
    # ~12 tokens of preamble; the number makes every prompt unique, so only shared history caches.
    text = f"Request {chain} {rng.randrange(10**9)}. Continue this text: " + _words(rng, tokens - 12)
    return {"role": "user", "content": text}


def _plain(w: Workload, rng: random.Random, chain: int) -> list[Spec]:
    return [Spec([_user(rng, chain, w.prompt_tokens.sample(rng))], w.output_tokens.sample(rng), chain=chain)]


def _multi_turn(w: Workload, rng: random.Random, chain: int) -> list[Spec]:
    turns, followup = int(w.mix.option("turns")), int(w.mix.option("followup"))
    history = [_user(rng, chain, w.prompt_tokens.sample(rng))]
    specs = []
    for turn in range(turns):
        max_tokens = w.output_tokens.sample(rng)
        specs.append(Spec(list(history), max_tokens, chain=chain, turn=turn, tag=f"turn {turn + 1}"))
        history.append({"role": "assistant", "content": _words(rng, max_tokens)})
        history.append({"role": "user", "content": _words(rng, followup)})
    return specs


def _sessions(w: Workload, rng: random.Random, chain: int) -> list[Spec]:
    turns, followup = int(w.mix.option("turns")), int(w.mix.option("followup"))
    think = float(w.mix.option("think"))
    fields = {"session_id": f"bench-{w.seed}-{chain}-{rng.randrange(10**9)}"} if int(w.mix.option("named")) else {}
    system = {"role": "system", "content": f"Agent {chain}. " + _words(rng, int(w.mix.option("system")))}
    history = [system, _user(rng, chain, w.prompt_tokens.sample(rng))]
    specs = []
    for turn in range(turns):
        max_tokens = w.output_tokens.sample(rng)
        specs.append(
            Spec(
                list(history), max_tokens, dict(fields), chain=chain, turn=turn, tag=f"turn {turn + 1}", think=think * (turn > 0)
            )
        )
        history.append({"role": "assistant", "content": _words(rng, max_tokens)})
        history.append({"role": "user", "content": _words(rng, followup)})
    return specs


def _long_context(w: Workload, rng: random.Random, chain: int) -> list[Spec]:
    long = rng.random() < float(w.mix.option("share"))
    tokens = rng.randint(int(w.mix.option("min")), int(w.mix.option("max"))) if long else w.prompt_tokens.sample(rng)
    spec = Spec([_user(rng, chain, tokens)], w.output_tokens.sample(rng), chain=chain, tag="long" if long else "short")
    return [spec]


def _reasoning(w: Workload, rng: random.Random, chain: int) -> list[Spec]:
    think = rng.random() < float(w.mix.option("share"))
    budget = int(w.mix.option("budget"))
    messages = [_user(rng, chain, w.prompt_tokens.sample(rng))]
    output = w.output_tokens.sample(rng)
    if think:
        return [Spec(messages, output + budget, {"reasoning": {"max_tokens": budget}}, chain=chain, tag="reasoning")]
    return [Spec(messages, output, {"reasoning": {"enabled": False}}, chain=chain, tag="no reasoning")]


def _tools(w: Workload, rng: random.Random, chain: int) -> list[Spec]:
    if rng.random() >= float(w.mix.option("share")):
        return _plain(w, rng, chain)
    city, days = rng.choice(CITIES), rng.randint(1, 7)
    context = _words(rng, w.prompt_tokens.sample(rng) - 24)
    ask = {"role": "user", "content": f"{context}\n\nUse a tool: what is the weather in {city} for the next {days} days?"}
    fields = {"tools": TOOLS, "tool_choice": w.mix.option("choice")}
    call = {
        "id": f"call_{chain}",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": city, "days": days})},
    }
    result = {"forecast": [{"day": d + 1, "high_c": rng.randint(-5, 35)} for d in range(days)]}
    answer: list[dict[str, Any]] = [
        ask,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)},
    ]
    output = w.output_tokens.sample(rng)
    return [
        Spec([ask], output, fields, chain=chain, tag="tool call"),
        Spec(answer, output, {"tools": TOOLS}, chain=chain, turn=1, tag="tool result"),
    ]


GENERATORS: dict[str, Callable[[Workload, random.Random, int], list[Spec]]] = {
    "plain": _plain,
    "multi-turn": _multi_turn,
    "long-context": _long_context,
    "reasoning": _reasoning,
    "tools": _tools,
    "sessions": _sessions,
}
