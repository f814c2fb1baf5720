"""Batches in the database: files, batches and their requests, and the leases that let any
server's runner work a batch without running a request twice.

A runner claims pending requests (``claim``: a lease of a few seconds, renewed while they run); a
result is stored only by the runner that holds the request (``finish``), so every ``custom_id``
is answered exactly once; a runner that stops returns its requests (``release``), and one that
dies leaves leases that lapse, after which any runner takes them again.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from server.batches.files import result_files
from server.gateway.db import Database
from server.gateway.tables import BatchItem, BatchRow, StoredFile
from server.timeutil import utcnow

# Batches with work left (expiring: past its window, its running requests not yet back).
ACTIVE = ("validating", "in_progress", "cancelling", "expiring")


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


@dataclass(frozen=True)
class Claimed:
    batch_id: str
    custom_id: str
    body: dict[str, Any]
    endpoint: str
    model: str | None
    key_id: int | None


@dataclass(frozen=True)
class Counts:
    total: int
    completed: int
    failed: int


class BatchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- files ---------------------------------------------------------------------------------
    def add_file(self, key_id: int | None, filename: str, purpose: str, content: str) -> StoredFile:
        row = StoredFile(id=new_id("file-"), key_id=key_id, filename=filename, purpose=purpose, content=content)
        with self.db.session() as s:
            s.add(row)
        return row

    def file(self, file_id: str, key_id: int | None) -> StoredFile | None:
        with self.db.session() as s:
            row = s.get(StoredFile, file_id)
            return row if row is not None and row.key_id == key_id else None

    def files(self, key_id: int | None, purpose: str | None = None) -> list[StoredFile]:
        with self.db.session() as s:
            q = select(StoredFile).where(StoredFile.key_id.is_(None) if key_id is None else StoredFile.key_id == key_id)
            if purpose is not None:
                q = q.where(StoredFile.purpose == purpose)
            return list(s.scalars(q.order_by(StoredFile.created_at.desc())))

    def delete_file(self, file_id: str, key_id: int | None) -> bool:
        with self.db.session() as s:
            row = s.get(StoredFile, file_id)
            if row is None or row.key_id != key_id:
                return False
            s.delete(row)
            return True

    # ---- batches -------------------------------------------------------------------------------
    def create(
        self,
        *,
        key_id: int | None,
        shape: str,
        endpoint: str,
        model: str | None,
        window_hours: float,
        requests: list[tuple[str, dict[str, Any]]],
        input_file_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> BatchRow:
        now = utcnow()
        row = BatchRow(
            id=new_id("batch_"),
            key_id=key_id,
            shape=shape,
            endpoint=endpoint,
            model=model,
            status="validating",
            created_at=now,
            expires_at=now + dt.timedelta(hours=window_hours),
            completion_window=f"{window_hours:g}h",
            input_file_id=input_file_id,
            meta=json.dumps(metadata) if metadata is not None else None,
        )
        with self.db.session() as s:
            s.add(row)
            s.flush()
            for n, (custom_id, body) in enumerate(requests):
                s.add(BatchItem(batch_id=row.id, custom_id=custom_id, position=n, body=json.dumps(body), state="pending"))
        return row

    def get(self, batch_id: str, key_id: int | None) -> BatchRow | None:
        with self.db.session() as s:
            row = s.get(BatchRow, batch_id)
            return row if row is not None and row.key_id == key_id else None

    def list_batches(self, key_id: int | None, shape: str, limit: int = 20, after: str | None = None) -> list[BatchRow]:
        with self.db.session() as s:
            q = select(BatchRow).where(BatchRow.shape == shape)
            q = q.where(BatchRow.key_id.is_(None) if key_id is None else BatchRow.key_id == key_id)
            if after is not None:
                anchor = s.get(BatchRow, after)
                if anchor is not None:
                    q = q.where(BatchRow.created_at < anchor.created_at)
            return list(s.scalars(q.order_by(BatchRow.created_at.desc()).limit(limit)))

    def counts(self, batch_id: str) -> Counts:
        with self.db.session() as s:
            rows = s.execute(
                select(BatchItem.state, BatchItem.status_code, func.count())
                .where(BatchItem.batch_id == batch_id)
                .group_by(BatchItem.state, BatchItem.status_code)
            ).all()
        total = sum(n for _, _, n in rows)
        ok = sum(n for state, code, n in rows if state == "done" and code is not None and code < 300)
        failed = sum(n for state, code, n in rows if state in ("done", "expired") and (code is None or code >= 300))
        return Counts(total, ok, failed)

    def items(self, batch_id: str) -> list[BatchItem]:
        with self.db.session() as s:
            return list(s.scalars(select(BatchItem).where(BatchItem.batch_id == batch_id).order_by(BatchItem.position)))

    def cancel(self, batch_id: str, key_id: int | None) -> BatchRow | None:
        """Stop a batch: requests not started are not run; those running finish."""
        with self.db.session() as s:
            row = s.get(BatchRow, batch_id)
            if row is None or row.key_id != key_id:
                return None
            if row.status in ("validating", "in_progress"):
                # The requests first, then the batch's row: the order every transaction here
                # locks them in (a runner's claim holds the requests it took while it marks their
                # batch in progress). The other order is a lock cycle with such a claim, which
                # PostgreSQL breaks by aborting one side.
                s.execute(
                    update(BatchItem)
                    .where(BatchItem.batch_id == batch_id, BatchItem.state == "pending")
                    .values(state="cancelled")
                )
                s.execute(
                    update(BatchRow)
                    .where(BatchRow.id == batch_id, BatchRow.status.in_(("validating", "in_progress")))
                    .values(status="cancelling", cancelling_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                s.refresh(row)  # what the database now holds (a claim may have moved it meanwhile)
            return row

    # ---- the runner's side -----------------------------------------------------------------------
    def claim(self, n: int, lease_s: float) -> list[Claimed]:
        """Up to ``n`` requests to run, oldest batch first, leased for ``lease_s`` seconds."""
        now = time.time()
        with self.db.session() as s:
            live = select(BatchRow.id).where(BatchRow.status.in_(("validating", "in_progress")), BatchRow.expires_at > utcnow())
            q = (
                select(BatchItem)
                .where(
                    BatchItem.batch_id.in_(live),
                    (BatchItem.state == "pending") | ((BatchItem.state == "running") & (BatchItem.claimed_until < now)),
                )
                .order_by(BatchItem.batch_id, BatchItem.position)
                .limit(n)
                .with_for_update(skip_locked=True)
            )
            items = list(s.scalars(q))
            batches = {b.id: b for b in s.scalars(select(BatchRow).where(BatchRow.id.in_({i.batch_id for i in items})))}
            out = []
            for item in items:
                item.state, item.claimed_until = "running", now + lease_s
                batch = batches[item.batch_id]
                if batch.status == "validating":
                    _move(s, batch, "in_progress", in_progress_at=utcnow())
                out.append(
                    Claimed(item.batch_id, item.custom_id, json.loads(item.body), batch.endpoint, batch.model, batch.key_id)
                )
            return out

    def renew(self, claimed: list[Claimed], lease_s: float) -> None:
        with self.db.session() as s:
            for c in claimed:
                s.execute(
                    update(BatchItem)
                    .where(BatchItem.batch_id == c.batch_id, BatchItem.custom_id == c.custom_id, BatchItem.state == "running")
                    .values(claimed_until=time.time() + lease_s)
                )

    def finish(self, c: Claimed, status_code: int, result: dict[str, Any], gen_id: str | None) -> bool:
        """Store the result of a running request (False: it was not running any more)."""
        with self.db.session() as s:
            done = s.execute(
                update(BatchItem)
                .where(BatchItem.batch_id == c.batch_id, BatchItem.custom_id == c.custom_id, BatchItem.state == "running")
                .values(state="done", status_code=status_code, result=json.dumps(result), gen_id=gen_id, claimed_until=None)
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def release(self, claimed: list[Claimed]) -> None:
        """Hand requests back unrun (a stopping runner, a server that refused for now)."""
        with self.db.session() as s:
            for c in claimed:
                s.execute(
                    update(BatchItem)
                    .where(BatchItem.batch_id == c.batch_id, BatchItem.custom_id == c.custom_id, BatchItem.state == "running")
                    .values(state="pending", claimed_until=None)
                )

    def settle(self) -> list[BatchRow]:
        """Batches whose work is over (every request answered, cancelled or expired) get their
        final status; returned so the caller can write their output."""
        with self.db.session() as s:
            active = list(s.scalars(select(BatchRow.id).where(BatchRow.status.in_(ACTIVE))))
        return [row for row in map(self._settle_one, active) if row is not None]

    def _settle_one(self, batch_id: str) -> BatchRow | None:
        # One transaction per batch: none holds one batch's row while it waits for another's
        # requests, so settling cannot close a lock cycle with a claim that spans two batches.
        with self.db.session() as s:
            row = s.get(BatchRow, batch_id)
            if row is None or row.status not in ACTIVE:
                return None
            if row.status != "cancelling" and row.expires_at <= utcnow():
                s.execute(
                    update(BatchItem).where(BatchItem.batch_id == row.id, BatchItem.state == "pending").values(state="expired")
                )
                if row.status != "expiring" and not _move(s, row, "expiring"):
                    return None  # cancelled, or moved by another server, since it was read
            open_items = s.scalar(
                select(func.count()).where(BatchItem.batch_id == row.id, BatchItem.state.in_(("pending", "running")))
            )
            if open_items:
                return None
            final = {"cancelling": "cancelled", "expiring": "expired"}.get(row.status, "completed")
            if not _move(s, row, final, finished_at=utcnow()):
                return None  # another server's runner settled it first (and wrote its files)
            # The final status and its files in one transaction: a client polling the batch
            # never sees it completed (or cancelled) before its output file is there.
            items = list(s.scalars(select(BatchItem).where(BatchItem.batch_id == row.id).order_by(BatchItem.position)))
            output, errors = result_files(row, items)
            row.output_file_id = self._file_in(s, row, "output", output)
            row.error_file_id = self._file_in(s, row, "error", errors)
            return row

    @staticmethod
    def _file_in(s: Session, row: BatchRow, kind: str, content: str | None) -> str | None:
        if content is None:
            return None
        f = StoredFile(
            id=new_id("file-"), key_id=row.key_id, filename=f"{row.id}_{kind}.jsonl", purpose="batch_output", content=content
        )
        s.add(f)
        return f.id


def _move(s: Session, row: BatchRow, status: str, **values: Any) -> bool:
    """Change a batch's status only if it is still the one ``row`` was read with: every server's
    runner settles the same batches, and a cancel can land between a read and its write. The
    UPDATE takes the row's lock and rechecks the status, so exactly one of two racing changes
    wins; False for the one that lost (nothing written)."""
    changed = s.execute(
        update(BatchRow)
        .where(BatchRow.id == row.id, BatchRow.status == row.status)
        .values(status=status, **values)
        .execution_options(synchronize_session=False)
    )
    if not changed.rowcount:  # type: ignore[attr-defined]
        return False
    for name, value in {"status": status, **values}.items():
        set_committed_value(row, name, value)  # as written: not a change left for the ORM to flush
    return True
