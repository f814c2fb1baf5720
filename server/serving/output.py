"""Engine text → reasoning, answer text and tool calls: one path for every API, streamed or
collected. The reasoning split comes first, then the tool-call parser on the answer, then the
``parallel_tool_calls`` rule (a second call is dropped when only one is allowed)."""

from __future__ import annotations

from server.hermes.parser import Piece as SplitPiece
from server.hermes.parser import ReasoningParser
from server.hermes.tools import ParsedCall, Text, ToolCallParser
from server.serving.events import AnswerText, Batch, ReasoningText, ToolCall
from server.serving.plan import OutputPlan


class OutputRouter:
    def __init__(self, plan: OutputPlan) -> None:
        self._split = ReasoningParser(plan.start_in_reasoning) if plan.split_reasoning else None
        self._tools = ToolCallParser() if plan.parse_tools else None
        self._exclude = plan.exclude_reasoning
        self._parallel = plan.parallel_tools
        self.tool_calls = 0  # calls kept (the finish reason says tool_calls when there are any)

    def feed(self, text: str) -> Batch:
        if not text:
            return []
        if self._split is None:
            return [AnswerText(text)]
        return self._route(self._split.feed(text))

    def finish(self) -> Batch:
        out = self._route(self._split.finish()) if self._split is not None else []
        if self._tools is not None:
            out.extend(self._calls(self._tools.finish()))
        return out

    def _route(self, pieces: list[SplitPiece]) -> Batch:
        out: Batch = []
        for p in pieces:
            if p.kind == "reasoning":
                if not self._exclude:
                    out.append(ReasoningText(p.text))
            elif self._tools is None:
                out.append(AnswerText(p.text))
            else:
                out.extend(self._calls(self._tools.feed(p.text)))
        return out

    def _calls(self, items: list[Text | ParsedCall]) -> Batch:
        out: Batch = []
        for it in items:
            if isinstance(it, Text):
                out.append(AnswerText(it.text))
            elif self._parallel or self.tool_calls == 0:
                it.index = self.tool_calls
                self.tool_calls += 1
                out.append(ToolCall(it))
        return out
