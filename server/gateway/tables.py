"""The database's tables (SQLAlchemy declarative models): keys, what their limits count, usage
records, stored responses, and the Batch API's files, batches and requests. Every table is
declared here, so importing this module is enough for ``create_all`` to make them all."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.timeutil import utcnow


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    hint: Mapped[str] = mapped_column(String(32))  # first characters, to tell keys apart in lists
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # The key's limits, one column per KeyLimits field (key_limits.py), NULL: none.
    credit_limit: Mapped[float | None] = mapped_column(Float, nullable=True)  # USD
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)  # requests per minute
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)  # tokens per minute
    # USD spent, kept with every usage batch; NULL in a database made before this column existed
    # (then summed from the usage records once, on first use).
    spent: Mapped[float | None] = mapped_column(Float, nullable=True)
    # How its requests are served, one column per KeyServing field (key_limits.py), NULL: default.
    service_tier: Mapped[str | None] = mapped_column(String(16), nullable=True)
    shared_cache: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    max_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The key API's fields (gateway/key_admin.py): the credit limit counts spend since the last
    # daily/weekly/monthly reset when limit_reset is set; a disabled or expired key is refused;
    # a management key manages keys and reads activity, and generates nothing.
    limit_reset: Mapped[str | None] = mapped_column(String(16), nullable=True)
    disabled: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    management: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


def usable(row: ApiKey, now: dt.datetime | None = None) -> bool:
    """Not revoked (deleted), not disabled, not expired."""
    now = now or utcnow()
    return row.revoked_at is None and not row.disabled and (row.expires_at is None or row.expires_at > now)


class RateEvent(Base):
    """What a key's per-minute limits count: an admitted request (requests=1) or a finished
    generation's tokens. Rows older than the window are deleted as usage records are written."""

    __tablename__ = "rate_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer, index=True)
    at: Mapped[float] = mapped_column(Float, index=True)  # unix time
    requests: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)


class CreditHold(Base):
    """The most a running generation can cost, held against its key's credit limit until its
    usage record replaces it (or it expires, if its process died)."""

    __tablename__ = "credit_holds"
    gen_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer, index=True)
    amount: Mapped[float] = mapped_column(Float)  # USD
    expires_at: Mapped[float] = mapped_column(Float)  # unix time


class GenerationRow(Base):
    """A stored usage record (``serving/record.py`` ``GenerationRow``), one per started generation."""

    __tablename__ = "generations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    model: Mapped[str] = mapped_column(String(200))
    route: Mapped[str] = mapped_column(String(64))
    api: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the adapter's name (NULL: before the column)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    native_finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    streamed: Mapped[bool] = mapped_column(Boolean, default=False)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    referer: Mapped[str | None] = mapped_column(String(500), nullable=True)
    title: Mapped[str | None] = mapped_column(String(500), nullable=True)
    external_user: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the request's `user`
    user_agent: Mapped[str | None] = mapped_column(String(500), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    service_tier: Mapped[str | None] = mapped_column(String(16), nullable=True)
    cache_discount: Mapped[float | None] = mapped_column(Float, nullable=True)
    replica: Mapped[int | None] = mapped_column(Integer, nullable=True)
    variant: Mapped[str | None] = mapped_column(String(16), nullable=True)
    batch_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ServerSecret(Base):
    """A key the server makes once and every process sharing the database uses (e.g. the one
    that seals reasoning for stateless Responses clients)."""

    __tablename__ = "server_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))  # base64


class StoredResponse(Base):
    """A Responses API response kept for ``previous_response_id`` (``store: true``)."""

    __tablename__ = "responses"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    response: Mapped[str] = mapped_column(Text)  # the response object, JSON
    history: Mapped[str] = mapped_column(Text)  # the conversation through this response, JSON messages


class StoredFile(Base):
    """A file uploaded for a batch (OpenAI's files API), or a batch's output or error file."""

    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    filename: Mapped[str] = mapped_column(String(300))
    purpose: Mapped[str] = mapped_column(String(32))
    content: Mapped[str] = mapped_column(Text)


class BatchRow(Base):
    """A batch (OpenAI's or OpenRouter's shape): its requests are BatchItem rows, run by the
    batch runner of any server on the database (batches/runner.py)."""

    __tablename__ = "batches"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    shape: Mapped[str] = mapped_column(String(16))  # "openai" | "openrouter"
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    in_progress_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    cancelling_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    completion_window: Mapped[str] = mapped_column(String(16))
    input_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    output_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    meta: Mapped[str | None] = mapped_column(Text, nullable=True)  # the client's metadata, JSON


class BatchItem(Base):
    """One request of a batch and, once run, its result (exactly one per custom_id)."""

    __tablename__ = "batch_items"
    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    custom_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)  # the request body, JSON
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending | running | done
    claimed_until: Mapped[float | None] = mapped_column(Float, nullable=True)  # unix time: a runner's lease
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)  # the response body, JSON
    gen_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
