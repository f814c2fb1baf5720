"""API keys and usage records in a real database through SQLAlchemy (SQLite file by default,
PostgreSQL by URL). Synchronous engine: calls run in worker threads from the async server.

The database is also where keys' limits are counted (requests and tokens of the last minute,
spend and the credit held for running requests), so that every API process — and every node
sharing one PostgreSQL database — sees the same counts: a limit check runs in one transaction
that first locks the key's row (:meth:`Database.locked_key`).

Keys are random 256-bit tokens, so a plain SHA-256 is the right hash: slow password hashes
(bcrypt, argon2) defend low-entropy secrets and would only add latency to every request.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Table,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker
from sqlalchemy.pool import StaticPool

from server.gateway.key_limits import KeyLimits, KeyServing
from server.gateway.migrate import add_new_columns
from server.gateway.tables import (
    ApiKey,
    Base,
    CreditHold,
    GenerationRow,
    RateEvent,
    ServerSecret,
    StoredResponse,
    usable,
)
from server.timeutil import period_start, utcnow

KEY_PREFIX = "sk-hermes-"
_GENERATIONS = cast(Table, GenerationRow.__table__)  # for Core inserts, past the ORM

# Counts a batch of keyed usage records in the transaction that writes them.
Settle = Callable[[Session, list[dict[str, Any]]], None]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def purge(s: Session, id_column: InstrumentedAttribute[Any], *where: ColumnElement[bool]) -> None:
    """Delete stale rows (``where``) that no other transaction holds. Every server sharing a
    database purges the same stale rows on its own writes; two plain DELETEs of one set can each
    lock a row the other then waits for, which PostgreSQL breaks by failing one. Rows another
    purge holds are left to it (SQLite, one writer at a time, has no row locks: a plain DELETE)."""
    stale = select(id_column).where(*where).with_for_update(skip_locked=True)
    s.execute(delete(id_column.class_).where(id_column.in_(stale)))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the CLI read while the server writes; synchronous=NORMAL (safe with WAL: a power
    # cut loses at most the last batch, never corrupts) avoids an fsync per usage batch, which
    # showed as 3 % of the API process under load.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
    # Take the write lock when a write transaction begins, not at its first write: a limit check
    # reads counts and then writes, and two processes must not both read before either writes.
    dbapi_conn.isolation_level = "IMMEDIATE"


class Database:
    def __init__(self, url: str) -> None:
        kwargs: dict[str, Any] = {}
        memory = url in ("sqlite://", "sqlite:///:memory:")
        if url.startswith("sqlite"):
            # One file shared by the server's worker threads and the CLI.
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if memory:
                kwargs["poolclass"] = StaticPool  # one in-memory database for every thread (tests)
        # A pooled PostgreSQL connection can die under us (server restart, idle timeout): test it
        # on checkout. A SQLite connection is a file handle, and the ping would be one more
        # statement on every transaction.
        self.engine: Engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"), **kwargs)
        if url.startswith("sqlite") and not memory:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        add_new_columns(self.engine, Base.metadata)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        # The in-memory database (tests) is one connection shared by every thread: transactions
        # from two threads must not interleave on it. Files and PostgreSQL pool connections.
        self._one_at_a_time: contextlib.AbstractContextManager[Any] = threading.RLock() if memory else contextlib.nullcontext()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._one_at_a_time, self._session.begin() as s:
            yield s

    # ---- keys --------------------------------------------------------------------------------
    def create_key(self, label: str, limits: KeyLimits | None = None, serving: KeyServing | None = None) -> tuple[ApiKey, str]:
        """A new key with its limits; the key itself is returned once (only its hash is kept)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        columns = {**(limits or KeyLimits()).columns(), **(serving or KeyServing()).columns()}
        row = ApiKey(label=label, key_hash=hash_key(key), hint=key[: len(KEY_PREFIX) + 4], spent=0.0, **columns)
        with self.session() as s:
            s.add(row)
        return row, key

    def list_keys(self) -> list[ApiKey]:
        with self.session() as s:
            return list(s.scalars(select(ApiKey).order_by(ApiKey.id)))

    def key_by_id(self, key_id: int) -> ApiKey | None:
        with self.session() as s:
            return s.get(ApiKey, key_id)

    def find_key(self, key: str) -> ApiKey | None:
        with self.session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
            return row if row is not None and usable(row) else None

    # ---- limits: counted here so that every process sees the same numbers ----------------------
    @contextmanager
    def locked_key(self, key_id: int) -> Iterator[Session]:
        """A transaction that holds the key's row: a no-op UPDATE is the first statement, which
        takes PostgreSQL's row lock and SQLite's write lock, so reads that follow see every
        committed count and no other checker of the key runs until this one commits."""
        with self.session() as s:
            s.execute(update(ApiKey).where(ApiKey.id == key_id).values(id=ApiKey.id))
            yield s

    @staticmethod
    def recent(s: Session, key_id: int, since: float) -> tuple[int, int, float | None, float | None]:
        """(requests, tokens, oldest request time, oldest token time) of the key since ``since``."""
        # Older events are only skipped here, not deleted: the usage writer purges them
        # (``TokenRateRule.settle``). A check that deleted them too would race that purge for the
        # same rows while it holds the key's row: a lock cycle PostgreSQL answers with a 500.
        ev = RateEvent
        req = s.execute(select(func.count(), func.min(ev.at)).where(ev.key_id == key_id, ev.at >= since, ev.requests > 0)).one()
        tok = s.execute(
            select(func.coalesce(func.sum(ev.tokens), 0), func.min(ev.at)).where(
                ev.key_id == key_id, ev.at >= since, ev.tokens > 0
            )
        ).one()
        return int(req[0]), int(tok[0]), req[1], tok[1]

    @staticmethod
    def committed(s: Session, key_id: int, now: float) -> float:
        """USD the key has spent plus what running generations hold against it."""
        row = s.get(ApiKey, key_id)
        if row is None:
            return 0.0
        if row.limit_reset is not None:  # the credit limit is on spend since the last reset
            since = period_start(row.limit_reset, dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None))
            spent = s.scalar(
                select(func.coalesce(func.sum(GenerationRow.cost), 0.0)).where(
                    GenerationRow.key_id == key_id, GenerationRow.created_at >= since
                )
            )
        else:
            if row.spent is None:  # a database from before the column: sum the records once
                total = s.scalar(select(func.coalesce(func.sum(GenerationRow.cost), 0.0)).where(GenerationRow.key_id == key_id))
                row.spent = float(total or 0.0)
            spent = row.spent
        held = s.scalar(
            select(func.coalesce(func.sum(CreditHold.amount), 0.0)).where(
                CreditHold.key_id == key_id, CreditHold.expires_at > now
            )
        )
        return float(spent or 0.0) + float(held or 0.0)

    # ---- usage -------------------------------------------------------------------------------
    def add_records(self, records: list[dict[str, Any]], settle: Settle | None = None) -> None:
        """Write a batch of usage records; ``settle`` counts the keyed ones in the same
        transaction (``Limits.record``: spend, credit holds, tokens per minute)."""
        # One executemany INSERT per batch, on the table itself: an ORM merge per record costs a
        # SELECT each (10 % of the API process under load), and even the ORM's bulk insert
        # inspects every mapped attribute of every record first (half as much again per write).
        if not records:
            return
        keyed = [r for r in records if r.get("key_id") is not None]
        with self.session() as s:
            s.execute(insert(_GENERATIONS), records)
            if keyed and settle is not None:
                settle(s, keyed)

    def record(self, gen_id: str) -> GenerationRow | None:
        with self.session() as s:
            return s.get(GenerationRow, gen_id)

    def daily_summary(self) -> list[dict[str, Any]]:
        day = func.date(GenerationRow.created_at)
        q = (
            select(
                GenerationRow.key_id,
                day.label("day"),
                func.count().label("requests"),
                func.sum(GenerationRow.prompt_tokens).label("prompt"),
                func.sum(GenerationRow.completion_tokens).label("completion"),
                func.sum(GenerationRow.reasoning_tokens).label("reasoning"),
                func.sum(GenerationRow.cost).label("cost"),
                func.sum(func.cast(GenerationRow.cancelled, Integer)).label("cancelled"),
            )
            .group_by(GenerationRow.key_id, day)
            .order_by(day, GenerationRow.key_id)
        )
        with self.session() as s:
            return [dict(r._mapping) for r in s.execute(q)]

    def server_secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The named secret, made with ``make`` the first time (the first writer wins a race)."""
        with contextlib.suppress(IntegrityError), self.session() as s:
            if s.get(ServerSecret, name) is None:
                s.add(ServerSecret(name=name, value=base64.b64encode(make()).decode()))
        with self.session() as s:
            return base64.b64decode(s.get_one(ServerSecret, name).value)

    # ---- stored Responses ------------------------------------------------------------------------
    def store_response(self, row: StoredResponse) -> None:
        """Keep one response; expired ones are removed on the way (bounded storage)."""
        with self.session() as s:
            purge(s, StoredResponse.id, StoredResponse.expires_at < utcnow())
            s.merge(row)

    def stored_response(self, response_id: str) -> StoredResponse | None:
        """A response that has not expired."""
        with self.session() as s:
            row = s.get(StoredResponse, response_id)
            return row if row is not None and row.expires_at >= utcnow() else None

    def delete_response(self, response_id: str) -> None:
        with self.session() as s:
            s.execute(delete(StoredResponse).where(StoredResponse.id == response_id))
