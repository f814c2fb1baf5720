"""The shipped workloads, chained turns in the scheduler, the sweep's level choice, token
statistics and the Pareto report, without a server."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import jsonschema
import pytest

from server.bench import load as load_module
from server.bench.load import Dist, Load, Record, Spec, Target, Workload, request_body, run_phase
from server.bench.plots import Point, pareto_front
from server.bench.record_stats import completion_rate
from server.bench.report import SLO, errors_text, summarize, write_report
from server.bench.sweep import LevelPlan, SweepPlan
from server.bench.usage_stats import token_stats
from server.bench.workloads import WEATHER, describe, make_specs, parse_mix


def _workload(mix: str, prompt: str = "200", output: str = "20", seed: int = 1) -> Workload:
    return Workload(mix=parse_mix(mix), prompt_tokens=Dist.parse(prompt), output_tokens=Dist.parse(output), seed=seed)


def test_workload_names_and_options_parse_with_clear_errors() -> None:
    assert describe(parse_mix("plain")) == "plain"
    assert describe(parse_mix("multi-turn")) == "multi-turn:followup=64,turns=4"
    assert parse_mix("long-context:share=0.25,max=9000").option("max") == 9000
    assert parse_mix("tools:choice=required").option("choice") == "required"
    for bad, says in [
        ("chatty", "unknown workload 'chatty'"),
        ("reasoning:depth=3", "has no option 'depth'"),
        ("reasoning:share=lots", "share must be a number"),
        ("reasoning:share=1.5", "share must be between 0 and 1"),
        ("long-context:min=9000,max=8000", "min <= max"),
        ("multi-turn:turns=0", "at least 1"),
        ("tools:choice=sometimes", "auto or required"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_mix(bad)


def test_multi_turn_turns_share_a_growing_prefix() -> None:
    w = _workload("multi-turn:turns=3,followup=10")
    specs = make_specs(w, 30, salt=2)
    assert [s.prompt for s in specs] == [s.prompt for s in make_specs(w, 30, salt=2)]  # seeded
    chains: dict[int, list[Spec]] = {}
    for s in specs:
        chains.setdefault(s.chain, []).append(s)
    assert len(chains) == 10 and all(len(c) == 3 for c in chains.values())
    for chain in chains.values():
        chain.sort(key=lambda s: s.turn)
        assert [s.tag for s in chain] == ["turn 1", "turn 2", "turn 3"]
        for before, after in itertools.pairwise(chain):
            assert after.messages[: len(before.messages)] == before.messages  # the prefix a cache can reuse
            added = after.messages[len(before.messages) :]
            assert [m["role"] for m in added] == ["assistant", "user"] and len(added[1]["content"].split()) == 10
    # Open-loop order: a turn comes after its previous turn, spread CHAIN_WINDOW chains apart.
    position = {(s.chain, s.turn): i for i, s in enumerate(specs)}
    assert all(position[(s.chain, s.turn - 1)] < i for i, s in enumerate(specs) if s.turn)
    assert [s.turn for s in specs[:8]] == [0] * 8


def test_sessions_have_their_own_system_prompts_think_times_and_session_ids() -> None:
    specs = make_specs(_workload("sessions:turns=3,system=300,think=2"), 12)
    chains: dict[int, list[Spec]] = {}
    for s in specs:
        chains.setdefault(s.chain, []).append(s)
    systems = set()
    for chain in chains.values():
        chain.sort(key=lambda s: s.turn)
        first = chain[0].messages[0]
        assert first["role"] == "system" and len(first["content"].split()) == 302  # "Agent N." + 300 words
        systems.add(first["content"])
        assert [s.think for s in chain] == [0.0, 2.0, 2.0]  # no pause before a session's first turn
        assert len({s.fields["session_id"] for s in chain}) == 1
        for before, after in itertools.pairwise(chain):
            assert after.messages[: len(before.messages)] == before.messages
    assert len(systems) == 4 and len({c[0].fields["session_id"] for c in chains.values()}) == 4
    unnamed = make_specs(_workload("sessions:turns=2,named=0"), 4)
    assert all("session_id" not in s.fields for s in unnamed)
    with pytest.raises(ValueError, match="think"):
        parse_mix("sessions:think=-1")


def test_replica_spread_from_our_counters_or_vllms() -> None:
    from server.bench import replicas

    ours = (
        'hermes_replica_requests_total{replica="0",route="new"} 2\n'
        'hermes_replica_requests_total{replica="0",route="session"} 4\n'
        'hermes_replica_requests_total{replica="1",route="spill"} 5\n'
        'hermes_replica_prompt_tokens_total{kind="prompt",replica="0"} 1000\n'
        'hermes_replica_prompt_tokens_total{kind="cached",replica="0"} 800\n'
        'hermes_replica_prompt_tokens_total{kind="prompt",replica="1"} 500\n'
        'vllm:request_success_total{engine="0",finished_reason="stop"} 99\n'
    )
    vllm_only = (
        'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 3\n'
        'vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 1\n'
        'vllm:request_success_total{engine="1",finished_reason="stop",model_name="m"} 4\n'
        'vllm:prefix_cache_queries_total{engine="0",model_name="m"} 400\n'
        'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 100\n'
        'vllm:prefix_cache_queries_total{engine="1",model_name="m"} 200\n'
    )

    class FakeClient:
        def __init__(self, text: str) -> None:
            self.text = text

        async def get(self, url: str, **_: object) -> object:
            assert url == "http://h:1/metrics"
            return type("R", (), {"status_code": 200, "text": self.text})()

    target = Target("t", "http://h:1/api/v1")
    # Before the run only vLLM's series exist (ours come with the first routed request); the
    # spread compares like with like.
    before = asyncio.run(replicas.read_counters(FakeClient(vllm_only), target))  # type: ignore[arg-type]
    before["hermes"] = {"0": {"requests": 1.0, "prompt": 0.0, "cached": 0.0}}
    got = replicas.spread(before, asyncio.run(replicas.read_counters(FakeClient(ours), target)))  # type: ignore[arg-type]
    assert got is not None and got["replicas"]["0"] == {"requests": 5, "prompt_tokens": 1000, "cached_share": 0.8}
    assert got["max_over_min_requests"] == 1.0 and got["max_over_min_prompt_tokens"] == 2.0
    got = replicas.spread({}, asyncio.run(replicas.read_counters(FakeClient(vllm_only), target)))  # type: ignore[arg-type]
    assert got is not None and got["replicas"]["1"]["requests"] == 4 and got["replicas"]["0"]["cached_share"] == 0.25
    assert "max/min: requests x1.00, prompt tokens x2.00" in replicas.describe(got)
    one = 'hermes_replica_requests_total{replica="0",route="new"} 2\n'
    assert replicas.spread({}, asyncio.run(replicas.read_counters(FakeClient(one), target))) is None  # type: ignore[arg-type]


def test_long_context_share_and_lengths() -> None:
    specs = make_specs(_workload("long-context:share=0.3,min=3000,max=4000", prompt="100"), 400)
    long = [s for s in specs if s.tag == "long"]
    assert 0.22 < len(long) / len(specs) < 0.38
    assert all(3000 - 12 <= len(s.prompt.split()) <= 4000 for s in long)  # ~1 token per word
    assert all(len(s.prompt.split()) <= 100 for s in specs if s.tag == "short")


def test_reasoning_mix_sends_a_budget_or_turns_thinking_off() -> None:
    specs = make_specs(_workload("reasoning:share=0.5,budget=300", output="20"), 200)
    thinking = [s for s in specs if s.tag == "reasoning"]
    assert 0.4 < len(thinking) / len(specs) < 0.6
    assert all(s.fields == {"reasoning": {"max_tokens": 300}} and s.max_tokens == 320 for s in thinking)
    assert all(s.fields == {"reasoning": {"enabled": False}} and s.max_tokens == 20 for s in specs if s.tag == "no reasoning")
    body = request_body(Target("a", "u"), Workload(reasoning="on"), thinking[0])
    assert body["reasoning"] == {"max_tokens": 300}  # the workload's own field wins over --reasoning


def test_tool_mix_calls_then_answers_from_the_result() -> None:
    specs = make_specs(_workload("tools:share=1,choice=required"), 20)
    calls = {s.chain: s for s in specs if s.tag == "tool call"}
    results = [s for s in specs if s.tag == "tool result"]
    assert calls and results
    for res in results:
        ask = calls[res.chain]
        assert ask.fields["tool_choice"] == "required" and res.messages[0] == ask.messages[0]
        assistant, tool = res.messages[1], res.messages[2]
        (call,) = assistant["tool_calls"]
        assert tool["tool_call_id"] == call["id"] and len(json.loads(tool["content"])["forecast"]) >= 1
        jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER)
        assert "tool_choice" not in res.fields and res.fields["tools"]
    body = request_body(Target("a", "u"), Workload(fixed_output=True), next(iter(calls.values())))
    assert body["tool_choice"] == "required" and "min_tokens" not in body  # a forced call's grammar ends it
    assert {s.tag for s in make_specs(_workload("tools:share=0"), 10)} == {"plain"}


@pytest.mark.parametrize("load", [Load(concurrency=3, requests=12), Load(rate=200.0, requests=12)])
async def test_a_turn_starts_only_after_the_previous_turn_ended(monkeypatch: pytest.MonkeyPatch, load: Load) -> None:
    events: list[tuple[str, int, int]] = []

    async def fake_request(client, target, name, workload, spec) -> Record:  # type: ignore[no-untyped-def]
        events.append(("start", spec.chain, spec.turn))
        await asyncio.sleep(0.02)
        events.append(("end", spec.chain, spec.turn))
        return Record(target.label, name, True, None, time.time(), 0.01, 0.02, tag=spec.tag)

    monkeypatch.setattr(load_module, "one_request", fake_request)
    w = _workload("multi-turn:turns=3")
    records, _ = await run_phase(Target("t", "http://unused"), load, w, make_specs(w, 12))
    assert len(records) == 12
    for _, chain, turn in (e for e in events if e[0] == "start" and e[2] > 0):
        start = events.index(("start", chain, turn))
        assert events.index(("end", chain, turn - 1)) < start
    if load.concurrency is not None:  # three users overlapped, each within a conversation
        in_flight, most = 0, 0
        for kind, _, _ in events:
            in_flight += 1 if kind == "start" else -1
            most = max(most, in_flight)
        assert most == 3


def _summary(tokens_per_s: float, rps: float = 1.0) -> dict[str, float]:
    return {"output_tokens_per_s": tokens_per_s, "requests_per_s": rps, "completion_rate_per_s": rps}


def test_sweep_doubles_until_every_target_saturates() -> None:
    plan = SweepPlan("concurrency", limit=1024, requests=8, probe_seconds=30, duration=300)
    load = plan.first()
    assert load.concurrency == 1 and load.requests == 32  # at least a stable p90's worth
    throughput = {1: (100, 100), 2: (190, 200), 4: (360, 210), 8: (370, 420), 16: (380, 430)}
    seen = []
    while load is not None:
        assert load.concurrency is not None
        seen.append(load.concurrency)
        a, b = throughput[load.concurrency]
        load = plan.next(load, [_summary(a), _summary(b)])
    # A saturates at 8 (370 < 1.1 x 360); B gained 2x at 8, saturates at 16.
    assert seen == [1, 2, 4, 8, 16]


def test_sweep_stops_at_its_limit_and_rate_sweeps_start_from_one_stream() -> None:
    plan = SweepPlan("concurrency", limit=4, requests=8, probe_seconds=30, duration=300)
    levels, load = [], plan.first()
    while load is not None:
        assert load.concurrency is not None
        levels.append(load.concurrency)
        load = plan.next(load, [_summary(100.0 * load.concurrency)])
    assert levels == [1, 2, 4]

    rates = SweepPlan("rate", limit=100, requests=8, probe_seconds=10, duration=300)
    first = rates.first()
    assert first.concurrency == 1
    r1 = rates.next(first, [_summary(50, rps=2.5), _summary(60, rps=3.0)])
    assert r1 is not None and r1.rate == 2.5 and r1.requests == 32
    r2 = rates.next(r1, [_summary(50, rps=2.5), _summary(60, rps=2.5)])
    assert r2 is not None and r2.rate == 5.0 and r2.requests == 50  # 10 s of arrivals
    # both fell behind the offered 5/s: saturated
    assert rates.next(r2, [_summary(100, rps=4.0), _summary(120, rps=4.4)]) is None


def test_fixed_levels_run_in_order_even_when_repeated() -> None:
    levels = [Load(concurrency=2), Load(concurrency=2), Load(concurrency=4)]
    plan, seen = LevelPlan(levels), []
    load = plan.first()
    while load is not None:
        seen.append(load.concurrency)
        load = plan.next(load, [])
    assert seen == [2, 2, 4]


def _usage_record(tag: str, prompt: int, cached: int, completion: int, reasoning: int = 0, calls: int = 0) -> Record:
    return Record(
        "t", "c=1", True, None, 0.0, 0.1, 1.0, prompt_tokens=prompt, completion_tokens=completion,
        reasoning_tokens=reasoning, tag=tag, cached_tokens=cached, tool_calls=calls,
    )  # fmt: skip


def test_token_statistics_come_from_usage_counts() -> None:
    records = [
        _usage_record("turn 1", 300, 0, 10),
        _usage_record("turn 2", 400, 256, 10, reasoning=4),
        _usage_record("turn 2", 420, 384, 12, calls=2),
        Record("t", "c=1", False, "http_429", 0.0, None, 0.0),  # no usage: not counted
    ]
    stats = token_stats(records)
    assert stats["requests"] == 3 and stats["prompt_tokens"] == 1120 and stats["cached_tokens"] == 640
    assert stats["cached_share"] == pytest.approx(640 / 1120) and stats["with_tool_calls"] == 1
    assert stats["reasoning_tokens"] == 4 and stats["spread"]["prompt_tokens"]["max"] == 420
    assert stats["by_tag"]["turn 2"]["cached_tokens"] == 640 and stats["by_tag"]["turn 1"]["cached_share"] == 0


def test_pareto_front_keeps_points_nothing_beats() -> None:
    pts = [Point("a", "c=1", 100, 100, True), Point("a", "c=4", 90, 350, True), Point("a", "c=8", 60, 380, False)]
    pts.append(Point("a", "c=2", 80, 180, True))  # beaten by c=4 on both axes
    assert [p.level for p in pareto_front(pts)] == ["c=8", "c=4", "c=1"]


def test_sweep_report_has_slo_verdicts_and_a_pareto_plot(tmp_path) -> None:
    def recs(ttft: float, n: int = 4) -> list[Record]:
        return [
            Record("A", "x", True, None, 0.0, ttft, ttft + 0.9, itl=[0.1] * 9, prompt_tokens=50, completion_tokens=10)
            for _ in range(n)
        ]

    results, records = [], {}
    for level, ttft in (("c=1", 0.1), ("c=2", 0.2), ("c=4", 2.0)):
        summary = summarize(recs(ttft), 2.0, SLO())
        passed = ttft < 1
        verdict = {"passed": passed, "broke": [] if passed else ["ttft_p90"]}
        results.append({"target": "A", "url": "u", "load": level, "summary": summary, "slo": verdict})
        records[("A", level)] = recs(ttft)
    paths = write_report(tmp_path, {"workload": "plain"}, results, [], records, itl_p90_ms=50)
    page = paths["html"].read_text()
    assert "broke ttft_p90" in page and page.count("data:image/png;base64,") == 3 and "Workload" in page
    assert paths["pareto.png"].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(paths["json"].read_text())["tokens"]["prompt_tokens"] == 600


async def test_one_request_reads_usage_tool_calls_and_a_refusals_retry_after() -> None:
    import httpx

    from server.bench.load import one_request

    def sse(*chunks: dict) -> bytes:  # type: ignore[type-arg]
        return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["messages"][0]["content"] == "busy":
            return httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"code": 429, "message": "full"}})
        call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        usage = {
            "prompt_tokens": 300, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 256},
            "completion_tokens_details": {"reasoning_tokens": 3},
        }  # fmt: skip
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=sse(
                {"id": "gen-1", "choices": [{"index": 0, "delta": {"reasoning": "hm"}}]},
                {"id": "gen-1", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]},
                {"id": "gen-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
                {"id": "gen-1", "choices": [], "usage": usage},
            ),
        )

    target, w = Target("t", "http://test/v1"), Workload()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        ok = await one_request(client, target, "c=1", w, Spec([{"role": "user", "content": "hi"}], 9, tag="tool call"))
        refused = await one_request(client, target, "c=1", w, Spec([{"role": "user", "content": "busy"}], 9))
    assert ok.ok and ok.gen_id == "gen-1" and ok.tool_calls == 1 and ok.finish_reason == "tool_calls"
    assert (ok.prompt_tokens, ok.cached_tokens, ok.completion_tokens, ok.reasoning_tokens) == (300, 256, 9, 3)
    assert ok.tag == "tool call" and len(ok.itl) == 1
    assert not refused.ok and refused.error == "http_429" and refused.retry_after == 7.0
    s = summarize([ok, refused], 1.0, SLO())
    assert s["retry_after_s_max"] == 7.0 and s["errors"] == {"http_429": 1}
    assert errors_text(s["errors"], s["retry_after_s_max"]) == "http_429:1 (Retry-After up to 7 s)"
    assert errors_text({}, None) == "-"


async def test_an_open_loop_offers_exactly_its_rate_and_completions_show_falling_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[float] = []

    async def fake_request(client, target, name, workload, spec) -> Record:  # type: ignore[no-untyped-def]
        sent.append(time.perf_counter())
        await asyncio.sleep(0.01)
        return Record(target.label, name, True, None, time.time(), 0.005, 0.01)

    monkeypatch.setattr(load_module, "one_request", fake_request)
    w = _workload("plain", prompt="10")
    t0 = time.perf_counter()
    records, wall = await run_phase(Target("t", "http://unused"), Load(rate=40.0, requests=40), w, make_specs(w, 40))
    # 40 arrivals spread over 40 / 40 s (slack for a busy machine's timers)
    assert len(records) == 40 and sent[-1] - sent[0] > 0.5 and sent[-1] - t0 <= 1.0 + 0.3 and wall < 2
    kept = completion_rate(records)
    assert kept is not None and 25 < kept < 80  # completions keep pace with the 40/s offered

    # A server that serves one request at a time, 50 ms each, completes 20/s however many arrive.
    behind = [Record("t", "x", True, None, 0.05 * i, 0.01, 0.05) for i in range(40)]
    assert completion_rate(behind) == pytest.approx(20.0)
    assert completion_rate(behind[:2]) is None


@pytest.mark.parametrize("together", [False, True])
def test_ab_rounds_run_the_targets_one_after_the_other_or_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path, together: bool
) -> None:
    from server.bench import runner as runner_module
    from server.bench.runner import BenchOptions, run_bench

    spans: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}

    async def fake_request(client, target, name, workload, spec) -> Record:  # type: ignore[no-untyped-def]
        start = time.monotonic()
        await asyncio.sleep(0.02)
        if name != "warmup":
            spans[target.label].append((start, time.monotonic()))
        return Record(target.label, name, True, None, time.time(), 0.01, 0.02, completion_tokens=4, tag=spec.tag)

    monkeypatch.setattr(load_module, "one_request", fake_request)
    monkeypatch.setattr(runner_module, "one_request", fake_request)
    closed = "http://127.0.0.1:9/v1"  # nothing listens: the replica counters read as none
    opts = BenchOptions(
        targets=[Target("a", closed), Target("b", closed)],
        workload=Workload(),
        concurrency="2",
        requests=8,
        rounds=2,
        together=together,
        warmup=1,
        out=tmp_path,
    )
    result = run_bench(opts)
    assert len(spans["a"]) == len(spans["b"]) == 8
    overlapping = sum(1 for a0, a1 in spans["a"] for b0, b1 in spans["b"] if a0 < b1 and b0 < a1)
    assert (overlapping > 0) is together  # at once: a's and b's requests in flight together
    (entry,) = result["ab"]
    assert len(entry["round_throughput_ratios"]) == 2 and result["meta"]["together"] is together
