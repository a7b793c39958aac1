"""Tables (SQLAlchemy 2 typed ORM), the database engine, and id generation.

Data flows one way: event → run → step → attempt. Runs and steps copy what they need from the
workflow when they are created, so editing a workflow never changes a run already under way.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from threading import Lock
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from .statuses import RUN_UNFINISHED

_B32 = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    """A time-ordered, unguessable id (ULID layout in Crockford base32), e.g. ``run_01j…``."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_B32[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def is_id(value: str, prefix: str) -> bool:
    """Whether ``value`` has the shape of a ``new_id(prefix)``."""
    return value.startswith(f"{prefix}_") and len(value) == len(prefix) + 27


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always hands back an aware datetime (SQLite would drop the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType}


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]
    # What the dashboard remembers for the account (accounts.Preferences): its timezone, where
    # "send a test to me" goes.
    preferences: Mapped[dict[str, Any]] = mapped_column(
        JSONType, default=dict, server_default=text("'{}'")
    )


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (Index("ix_workflows_match", "account_id", "trigger", "enabled"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[str] = mapped_column(String(100))
    offset_minutes: Mapped[int] = mapped_column(Integer, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # event-type slugs or ids the workflow is limited to; empty: all
    event_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    continue_when_blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    # conditions.Node dicts: the booking must match them for the workflow to run
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONType, default=list, server_default=text("'[]'")
    )
    # why the operator's plan change switched it off, for its user; enabling clears it
    paused_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    steps: Mapped[list[WorkflowStep]] = relationship(
        order_by="WorkflowStep.position", cascade="all, delete-orphan", lazy="selectin"
    )


class WorkflowStep(Base):
    __tablename__ = "workflow_steps"
    __table_args__ = (UniqueConstraint("workflow_id", "position"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    position: Mapped[int]
    action: Mapped[str] = mapped_column(String(100))
    settings: Mapped[dict[str, Any]]
    # conditions.Node dicts: the step runs only when they hold (else it is skipped)
    when: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, default=None)
    # {"action", "settings" (sealed)}: sent instead when the step fails for good
    fallback: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)


class Integration(Base):
    """One account's settings for one integration (e.g. ``twilio``), secrets sealed."""

    __tablename__ = "integrations"
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    settings: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("account_id", "event_id"),
        # The Events page (newest first, by id) and a booking's timeline.
        Index("ix_events_account", "account_id", "id"),
        Index("ix_events_booking", "account_id", "booking_uid"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(100))
    booking_uid: Mapped[str] = mapped_column(String(200))
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]]
    payload_hash: Mapped[str] = mapped_column(String(64))
    answer: Mapped[dict[str, Any]]  # what POST /v1/events answered; a replay answers the same
    # The source connection's type it came through ("calcom"); None: the API (or Python).
    source: Mapped[str | None] = mapped_column(String(100), default=None)
    # every workflow of the account, and whether and why it ran (the event inspector)
    decisions: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)


class EventEmail(Base):
    """An invitee's email an event carried, casefolded in Python (SQL's lower() is ASCII-only
    on SQLite): how the Events page finds an event by email, through an index."""

    __tablename__ = "event_emails"
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    event_pk: Mapped[str] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Draft(Base):
    """The workflow editor's draft between its post and the page showing it (POST-redirect-
    GET): the form as it stands, what came of the post, and, for a new workflow, the workflow
    it created: at most one (set by a conditional update inside the creating transaction, and
    unique), so two posts of one draft in flight never create two workflows."""

    __tablename__ = "drafts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # unguessable token
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    workflow_id: Mapped[str | None] = mapped_column(String(40))  # the workflow it edits
    created_workflow_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    form: Mapped[dict[str, Any]]
    outcome: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(index=True)


def invitee_emails(booking: Mapping[str, Any]) -> list[str]:
    """The emails of a booking's invitee and invitees (a booking as an event's payload holds
    it), casefolded, each once."""
    people = [booking.get("invitee") or {}, *(booking.get("invitees") or [])]
    return sorted({p["email"].strip().casefold() for p in people if p.get("email")})


def booking_field(*path: str) -> ColumnElement[str]:
    """A string inside the booking an event carried, as a column to select."""
    field: ColumnElement[str] = Event.payload[("booking", *path)].as_string()
    return field


class BookingState(Base):
    """The current state of a booking, kept from the events received about it."""

    __tablename__ = "bookings"
    __table_args__ = (Index("ix_bookings_start", "account_id", "start"),)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    uid: Mapped[str] = mapped_column(String(200), primary_key=True)
    status: Mapped[str] = mapped_column(String(40))
    start: Mapped[datetime]
    end: Mapped[datetime]
    event_id: Mapped[str] = mapped_column(String(40))  # the last event applied
    last_event_at: Mapped[datetime]
    # When a payment.received arrived for it (whatever its order among the other events).
    paid_at: Mapped[datetime | None] = mapped_column(default=None)
    # The invitee did not attend, as the latest event (booking.no_show) says.
    no_show: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


# A workflow's pending reminder for a booking: planned, not taken by a worker. There is at
# most one (ux_runs_pending_reminder), whatever plans it at the same time (two events about the
# booking, an event and an enable); one a worker has taken (sending, retrying) does not count,
# so a reschedule can plan the new time's reminder beside it.
PENDING_REMINDER = "unfired AND status IN ('scheduled', 'queued')"
# A replay that has not finished: there is at most one per replayed run (ux_runs_pending_replay),
# so a second click while the first replay is under way cannot send the steps twice.
PENDING_REPLAY = "replay_of IS NOT NULL AND status IN ({})".format(
    ", ".join(f"'{s}'" for s in sorted(RUN_UNFINISHED))
)


class Run(Base):
    """One workflow run for one event.

    ``due_at`` is when the scheduler should next hand the run to the broker: soon after creation
    (in case the first message is lost), at the retry time while waiting, at lease expiry while
    running; NULL once finished. The partial index keeps a scheduler tick proportional to what
    is due.
    """

    __tablename__ = "runs"
    __table_args__ = (
        Index(
            "ix_runs_due",
            "due_at",
            postgresql_where=text("due_at IS NOT NULL"),
            sqlite_where=text("due_at IS NOT NULL"),
        ),
        # The run log, newest first by id, of the account or of one workflow.
        Index("ix_runs_account", "account_id", "id"),
        Index("ix_runs_workflow", "workflow_id", "id"),
        Index("ix_runs_booking", "account_id", "booking_uid"),
        Index(
            "ux_runs_pending_reminder",
            "workflow_id",
            "booking_uid",
            unique=True,
            postgresql_where=text(PENDING_REMINDER),
            sqlite_where=text(PENDING_REMINDER),
        ),
        Index(
            "ux_runs_pending_replay",
            "replay_of",
            unique=True,
            postgresql_where=text(PENDING_REPLAY),
            sqlite_where=text(PENDING_REPLAY),
        ),
        Index(
            "ux_runs_replay_key",
            "account_id",
            "replay_key",
            unique=True,
            postgresql_where=text("replay_key IS NOT NULL"),
            sqlite_where=text("replay_key IS NOT NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(String(40))
    workflow_name: Mapped[str] = mapped_column(String(200))
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    trigger: Mapped[str] = mapped_column(String(100))
    booking_uid: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    test: Mapped[bool] = mapped_column(Boolean, default=False)
    continue_when_blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    # A time-triggered run planned from a booking that no worker has taken yet (it carries no
    # steps until then). The claim clears it, so a reminder sending or retrying is no longer
    # its booking's pending one.
    unfired: Mapped[bool] = mapped_column(Boolean, default=False)
    # A replay: the failed run it sends again, and the Idempotency-Key it was asked with.
    replay_of: Mapped[str | None] = mapped_column(String(40))
    replay_key: Mapped[str | None] = mapped_column(String(200))
    due_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    lease_token: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    steps: Mapped[list[RunStep]] = relationship(order_by="RunStep.position", lazy="selectin")


class RunStep(Base):
    __tablename__ = "run_steps"
    __table_args__ = (UniqueConstraint("run_id", "position"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    position: Mapped[int]
    action: Mapped[str] = mapped_column(String(100))
    settings: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A retry's time, or the moment a wait (Result.wait_until) parked the step until.
    next_attempt_at: Mapped[datetime | None]
    when: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, default=None)
    fallback: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    # The attempt number at which the step's action failed for good and its fallback took
    # over: attempts after it run the fallback. None: the step's own action.
    fallback_at: Mapped[int | None] = mapped_column(Integer, default=None)
    # The moment a wait (Result.wait_until) parked the step until: kept through a lost worker's
    # retry, so a delay taken up again never starts over.
    wait_until: Mapped[datetime | None] = mapped_column(default=None)
    # That wait ends early when the booking moves (Result.wait_until(follows_booking=True)): a
    # reschedule hands the step back to work its moment out again.
    wait_follows: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # Retries are counted from this attempt number: a wait, or the fallback taking over, starts
    # the count again, so waking up never uses up the step's retries.
    retry_base: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    external_id: Mapped[str | None] = mapped_column(String(200))
    error_code: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None]
    attempt_log: Mapped[list[Attempt]] = relationship(order_by="Attempt.number", lazy="selectin")


# Attempts whose delivery a provider may still report on (the ranks below final).
AWAITING_REPORT = "delivery_status IN ('accepted', 'sent')"


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("step_id", "number"),
        # A provider's callback finds its message by the id the provider gave it, among those
        # still awaiting a report: a message delivered at once (a webhook) costs no entry.
        Index(
            "ix_attempts_external",
            "external_id",
            postgresql_where=text(AWAITING_REPORT),
            sqlite_where=text(AWAITING_REPORT),
        ),
        # An endpoint's recent deliveries and success rate (Settings → Webhooks).
        Index(
            "ix_attempts_endpoint",
            "endpoint_id",
            "started_at",
            postgresql_where=text("endpoint_id IS NOT NULL"),
            sqlite_where=text("endpoint_id IS NOT NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    step_id: Mapped[str] = mapped_column(ForeignKey("run_steps.id", ondelete="CASCADE"))
    number: Mapped[int]
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime]
    duration_ms: Mapped[int]
    http_status: Mapped[int | None]
    error_code: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(String(200))
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    # What became of the message (statuses.DeliveryStatus), kept up by provider callbacks after
    # the step finished, with the provider's error code and words for a message that failed.
    delivery_status: Mapped[str | None] = mapped_column(String(20))
    delivery_updated_at: Mapped[datetime | None]
    delivery_error_code: Mapped[str | None] = mapped_column(String(100))
    delivery_error: Mapped[str | None] = mapped_column(Text)
    endpoint_id: Mapped[str | None] = mapped_column(String(40))
    # The action this attempt ran when it is not the step's own: its fallback's.
    action: Mapped[str | None] = mapped_column(String(100))


class Suppression(Base):
    """An address the account may no longer send to, on every channel: an E.164 number (SMS
    STOP, Twilio's 21610) or a casefolded email address (one-click unsubscribe)."""

    __tablename__ = "suppressions"
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(40))  # suppressions.SOURCES
    created_at: Mapped[datetime]


class CallbackReceipt(Base):
    """A provider report whose opt-outs or opt-ins were applied (``CallbackAnswer.receipt``):
    the same report again changes nothing. Kept only for reports that change the list."""

    __tablename__ = "callback_receipts"
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    receipt: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[datetime]


class CreditUsage(Base):
    """How many of its plan's monthly credits of one kind (``sms``) an account used in a month
    (``period``, "2026-12", UTC)."""

    __tablename__ = "credit_usage"
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class CreditCharge(Base):
    """The credits one step took: at most one charge a step, so a retry takes nothing more."""

    __tablename__ = "credit_charges"
    step_id: Mapped[str] = mapped_column(
        ForeignKey("run_steps.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(String(40))
    period: Mapped[str] = mapped_column(String(7))
    kind: Mapped[str] = mapped_column(String(20))
    amount: Mapped[int]
    created_at: Mapped[datetime]


class Endpoint(Base):
    """One address an action delivers to (a webhook URL) for one account, and its health."""

    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("account_id", "action", "url_hash"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(Text)
    url_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))  # endpoints.ACTIVE or endpoints.DISABLED
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None]
    # Since when every attempt failed (None: the last one succeeded, or none was made).
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


_IGNORING: dict[tuple[str, str], Any] = {}


def insert_ignoring(conn: Connection, model: type[Base], values: dict[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING (PostgreSQL or SQLite); whether a row was inserted."""
    key = (conn.dialect.name, model.__tablename__)
    if key not in _IGNORING:
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        keys = [getattr(model, c.name) for c in model.__table__.primary_key]
        _IGNORING[key] = insert(model).on_conflict_do_nothing().returning(*keys)
    return conn.execute(_IGNORING[key], values).first() is not None


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # Each engine's connections share one writer lock (a class of their own).
        factory = type("SerializedConnection", (_SerializedConnection,), {"writer": Lock()})
        engine = create_engine(
            url,
            connect_args={
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_SECONDS,
                "factory": factory,
            },
            # One connection per thread that may hold one (worker, API, scheduler): waiting
            # for a pooled connection would only queue in front of the writer lock.
            pool_size=20,
            max_overflow=20,
        )
        _serialize_sqlite_writers(engine)
        return engine
    # No pre-ping: it costs a round trip per transaction; a dropped connection fails its
    # transaction, which the caller retries (Dramatiq, the scheduler loop, the client).
    return create_engine(url, pool_size=20, max_overflow=20, pool_recycle=1800)


SQLITE_BUSY_SECONDS = 30.0
# An execution option: this connection only reads, one statement at a time (on SQLite it
# neither begins a transaction nor waits for the writer).
READ_ONLY = "linktime_read_only"


class _SerializedConnection(sqlite3.Connection):
    """A SQLite connection whose transactions take its engine's writer lock first.

    SQLite lets one writer in at a time; a second one waits in SQLite's busy handler, which
    polls with sleeps of 1 to 100 ms. In one process a lock hands the database on the moment
    the transaction before ends. Other processes (a CLI command beside ``linktime serve``)
    still meet on SQLite's own lock and its busy timeout."""

    writer: Lock
    holding = False

    def begin_immediate(self) -> None:
        if not self.writer.acquire(timeout=SQLITE_BUSY_SECONDS):
            raise sqlite3.OperationalError("database is locked (waited for this process's writer)")
        self.holding = True
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self.holding:
            self.holding = False
            self.writer.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()


def _serialize_sqlite_writers(engine: Engine) -> None:
    """WAL, and BEGIN IMMEDIATE under the process's writer lock, so that concurrent writers
    queue instead of failing on a read-to-write lock upgrade."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            return  # WAL: each statement reads a snapshot of its own, beside the writer
        dbapi = conn.connection.dbapi_connection
        assert isinstance(dbapi, _SerializedConnection)
        dbapi.begin_immediate()


class SourceConnection(Base):
    """An account's connection of a booking source (``sources.SourceType``): its settings, the
    signing secret sealed. Its id is the unguessable part of its inbound URL."""

    __tablename__ = "source_connections"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(100))
    settings: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SourceDelivery(Base):
    """One verified request a provider made to a connection (a refused one is not kept), what
    it came to and why: the connection's recent deliveries, the last ``inbound.KEEP``."""

    __tablename__ = "source_deliveries"
    __table_args__ = (Index("ix_source_deliveries_connection", "connection_id", "seq"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    connection_id: Mapped[str] = mapped_column(
        ForeignKey("source_connections.id", ondelete="CASCADE")
    )
    # Its place among the connection's deliveries (ids made in one millisecond do not sort in
    # the order they were made).
    seq: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20))  # inbound.TRANSLATED, IGNORED, UNTRANSLATABLE
    kind: Mapped[str | None] = mapped_column(String(200))  # the provider's event type
    reason: Mapped[str | None] = mapped_column(Text)
    # The booking events it became: [{"id", "type", "booking_uid", "replayed"}].
    events: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)


class SourceAlias(Base):
    """A source's own id for a booking known under another uid (``sources.Lookup.remember``):
    a Calendly invitee that replaced another on a reschedule keeps the first one's booking."""

    __tablename__ = "source_aliases"
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(500), primary_key=True)
    booking_uid: Mapped[str] = mapped_column(String(200))
