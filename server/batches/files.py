"""A finished batch's results, in each shape: OpenAI's output and error files (JSONL, one line per
request), OpenRouter's inline results. One line or entry per ``custom_id``, in input order."""

from __future__ import annotations

import json
from typing import Any

from server.gateway.tables import BatchItem, BatchRow

# Why a request that never ran has no answer (OpenAI's codes for them).
_UNRUN = {
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}


def result_entry(item: BatchItem) -> dict[str, Any]:
    """One request's result: exactly one of ``response`` (the endpoint's answer, any status) and
    ``error`` (it never got one)."""
    entry: dict[str, Any] = {"id": f"batch_req_{item.batch_id}_{item.position}", "custom_id": item.custom_id}
    if item.state == "done":
        entry["response"] = {"status_code": item.status_code, "request_id": item.gen_id, "body": json.loads(item.result or "{}")}
        entry["error"] = None
    else:
        code, message = _UNRUN.get(item.state, ("batch_request_failed", "The request was not executed."))
        entry["response"], entry["error"] = None, {"code": code, "message": message}
    return entry


def result_files(row: BatchRow, items: list[BatchItem]) -> tuple[str | None, str | None]:
    """OpenAI's shape: the output file's content (answered requests with a 2xx) and the error
    file's (errors, requests never run); None where a file would be empty, and for OpenRouter's
    shape (its results are inline)."""
    if row.shape != "openai":
        return None, None
    ok: list[str] = []
    failed: list[str] = []
    for item in items:
        if item.state == "running":  # a settled batch has none; never write half a result
            continue
        entry = result_entry(item)
        good = entry["response"] is not None and entry["response"]["status_code"] < 300
        (ok if good else failed).append(json.dumps(entry))
    return ("\n".join(ok) + "\n" if ok else None), ("\n".join(failed) + "\n" if failed else None)
