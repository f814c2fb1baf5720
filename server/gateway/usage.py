"""Usage records: kept until written (so /api/v1/generation answers at once), written to the
database in batches by one background task, counted in the metrics and logged one line each."""

from __future__ import annotations

import asyncio
import logging

from server.gateway.db import Database, Settle
from server.gateway.metrics import Metrics
from server.serving.record import UsageRecord

log = logging.getLogger("hermes.gateway")

# Usage-record fields on each generation's log line (never keys or text).
_LOGGED = (
    "id",
    "key_id",
    "route",
    "streamed",
    "cancelled",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "ttft_ms",
    "latency_ms",
    "error",
)
_BATCH = 500


class UsageLog:
    def __init__(self, metrics: Metrics, db: Database | None, settle: Settle | None = None) -> None:
        """``settle``: counts the keyed records in the transaction that writes them (the limits')."""
        self.metrics, self.db, self.settle = metrics, db, settle
        self._pending: dict[str, UsageRecord] = {}  # records not yet written
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._writing: tuple[asyncio.Future[None], list[UsageRecord]] | None = None  # the batch being written

    def add(self, rec: UsageRecord) -> None:
        """Called from a generation's ``finally`` (also on cancellation): never awaits."""
        self._pending[rec.id] = rec
        self._queue.put_nowait(rec)
        self.metrics.observe_generation(rec)
        log.info("generation %s", rec.finish_reason, extra={"gen_" + k: getattr(rec, k) for k in _LOGGED})

    def pending(self, gen_id: str) -> UsageRecord | None:
        return self._pending.get(gen_id)

    def pending_for(self, key_id: int) -> list[UsageRecord]:
        return [r for r in self._pending.values() if r.key_id == key_id]

    def start(self) -> None:
        if self.db is not None and self._writer is None:
            self._writer = asyncio.create_task(self._write_loop())

    async def _write_loop(self) -> None:
        assert self.db is not None
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < _BATCH:
                batch.append(self._queue.get_nowait())
            # Shielded: a flush that stops this loop waits for the write under way instead of
            # losing track of it (the thread would finish it unseen, after the flush returned).
            writing = asyncio.ensure_future(asyncio.to_thread(self.db.add_records, [r.row() for r in batch], self.settle))
            self._writing = (writing, batch)
            try:
                await asyncio.shield(writing)
            except Exception:  # keep serving; the records stay pending and are retried (a flush's
                # cancellation is no Exception: it leaves this write to the flush)
                log.exception("could not write %d usage records; retrying", len(batch))
                for r in batch:
                    self._queue.put_nowait(r)
                self._writing = None
                await asyncio.sleep(1)
                continue
            self._writing = None
            for r in batch:
                self._pending.pop(r.id, None)

    async def flush(self) -> None:
        """Write what is queued (at shutdown; tests), the write under way included."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        rest: list[UsageRecord] = []
        if self._writing is not None:
            writing, batch = self._writing
            self._writing = None
            try:
                await writing
            except Exception:  # written again below with the rest
                rest.extend(batch)
        while not self._queue.empty():
            rest.append(self._queue.get_nowait())
        if rest and self.db is not None:
            await asyncio.to_thread(self.db.add_records, [r.row() for r in rest], self.settle)
        self._pending.clear()
