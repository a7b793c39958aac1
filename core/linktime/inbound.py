"""Booking sources an account has connected, and what their providers post to them.

A connection (``POST /v1/sources``) gets an inbound URL, ``/v1/sources/{id}/events``, and a
signing secret. A request there is checked by the source's ``verify`` (no API key: a bad,
missing or stale signature answers 401 and nothing is stored), translated by its ``translate``,
and each booking event it becomes is ingested as ``POST /v1/events`` would ingest it, naming
its source. A payload that cannot be translated answers 422 naming the field; it is kept in the
connection's recent deliveries with the reason, as every verified request is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import Select, delete, func, insert, select
from sqlalchemy.orm import Session

from . import metrics
from .crypto import masked, revealed
from .engine import Hub
from .errors import FieldError, InputError, NotFound, pydantic_fields
from .inputs import MAX_JSON_DEPTH, too_deep, validate_input
from .models import Booking
from .sources import Inbound, Lookup, SourceRefused, SourceType, Translated, Untranslatable
from .storage import (
    Event,
    SourceAlias,
    SourceConnection,
    SourceDelivery,
    insert_ignoring,
    is_id,
    new_id,
    new_secret,
)

log = logging.getLogger(__name__)

# What a verified delivery came to.
TRANSLATED = "translated"  # it became booking events
IGNORED = "ignored"  # verified, nothing to ingest (the source said why)
UNTRANSLATABLE = "untranslatable"  # 422: the reason names the field
KEEP = 50  # recent deliveries kept per connection
_NEWEST_FIRST = (SourceDelivery.seq.desc(), SourceDelivery.id.desc())


class SourceIn(BaseModel):
    type: str = Field(description="An installed source, e.g. calcom (GET /v1/plugins lists them)")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="The source's connection settings. Leave the signing secret out to have "
        "one generated (shown once in the answer); give your own where the provider makes it "
        "(Stripe's whsec_…)",
    )


class SourceOut(BaseModel):
    id: str
    type: str
    title: str
    url: str = Field(description="Where the provider posts its webhooks: no API key needed")
    settings: dict[str, Any] = Field(description="Secrets masked, except once when generated")
    setup_url: str | None = None
    created_at: datetime
    updated_at: datetime


class DeliveryOut(BaseModel):
    id: str
    received_at: datetime
    status: str = Field(description="translated, ignored or untranslatable")
    kind: str | None = Field(description="The provider's event type, when it names one")
    reason: str | None
    events: list[dict[str, Any]] = Field(description="The booking events it became")


def _path(connection_id: str) -> str:
    return f"/v1/sources/{connection_id}/events"


def _url(hub: Hub, connection_id: str) -> str:
    base = (hub.settings.public_url or "").rstrip("/")
    return f"{base}{_path(connection_id)}"


def absolute(url: str, base: str) -> str:
    """A connection's inbound URL as the provider needs it: LINKTIME_PUBLIC_URL's, or under
    ``base`` (the address the caller reached this server at) when the operator set none."""
    return base.rstrip("/") + url if url.startswith("/") else url


def _type(hub: Hub, name: str, where: str = "type") -> SourceType:
    source = hub.registry.sources.get(name)
    if source is None:
        installed = ", ".join(sorted(hub.registry.sources)) or "none"
        message = f"source {name!r} is not installed; installed sources: {installed}"
        raise InputError("unknown source", [FieldError(where, message)])
    return source


def _out(hub: Hub, row: SourceConnection, shown: dict[str, Any] | None = None) -> SourceOut:
    source = hub.registry.sources.get(row.type)
    return SourceOut(
        id=row.id,
        type=row.type,
        title=source.title if source else row.type,
        url=_url(hub, row.id),
        settings=shown
        if shown is not None
        else masked(source.settings if source else None, row.settings),
        setup_url=source.setup_url if source else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _sealed(
    hub: Hub, source: SourceType, given: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validated settings, sealed for storing, and in clear for the one answer that shows a
    generated secret; the secret is generated when not given."""
    data = dict(given)
    if data.get(source.secret_field) in (None, ""):
        if source.secret_from_provider:
            where = f"settings.{source.secret_field}"
            at = source.setup_url or "its webhook settings"
            message = f"{source.title} makes this secret: copy it from {at}"
            raise InputError("the source settings are not valid", [FieldError(where, message)])
        data[source.secret_field] = new_secret()
    try:
        settings = validate_input(source.settings, data)
    except ValidationError as exc:
        problems = pydantic_fields(exc, "settings")
        raise InputError("the source settings are not valid", problems) from None
    clear = revealed(settings)
    shown = masked(source.settings, clear)
    if source.secret_field not in given or not given.get(source.secret_field):
        shown[source.secret_field] = clear[source.secret_field]
    return hub.sealer.seal(source.settings, settings), shown


def create(hub: Hub, account_id: str, spec: SourceIn) -> SourceOut:
    source = _type(hub, spec.type)
    sealed, shown = _sealed(hub, source, spec.settings)
    now = hub.clock()
    row = SourceConnection(
        id=new_id("src"),
        account_id=account_id,
        type=source.name,
        settings=sealed,
        created_at=now,
        updated_at=now,
    )
    with Session(hub.db, expire_on_commit=False) as session, session.begin():
        session.add(row)
    return _out(hub, row, shown)


def _owned(session: Session, account_id: str, connection_id: str) -> SourceConnection:
    row = session.get(SourceConnection, connection_id) if is_id(connection_id, "src") else None
    if row is None or row.account_id != account_id:
        raise NotFound(f"no source connection {connection_id!r}")
    return row


def list_all(hub: Hub, account_id: str) -> list[SourceOut]:
    with Session(hub.db) as session:
        rows = session.scalars(
            select(SourceConnection)
            .where(SourceConnection.account_id == account_id)
            .order_by(SourceConnection.id)
        )
        return [_out(hub, row) for row in rows]


def get(hub: Hub, account_id: str, connection_id: str) -> SourceOut:
    with Session(hub.db) as session:
        return _out(hub, _owned(session, account_id, connection_id))


def rotate(hub: Hub, account_id: str, connection_id: str, secret: str | None = None) -> SourceOut:
    """A new signing secret (``secret``, or a generated one shown this once): the old one stops
    working at once, as the provider's form takes one secret."""
    with Session(hub.db, expire_on_commit=False) as session, session.begin():
        row = _owned(session, account_id, connection_id)
        source = _type(hub, row.type)
        current = revealed(hub.sealer.open(source.settings, row.settings))
        current[source.secret_field] = secret
        row.settings, shown = _sealed(hub, source, current)
        row.updated_at = hub.clock()
    return _out(hub, row, shown)


def remove(hub: Hub, account_id: str, connection_id: str) -> None:
    with Session(hub.db) as session, session.begin():
        session.delete(_owned(session, account_id, connection_id))


def deliveries(hub: Hub, account_id: str, connection_id: str) -> list[DeliveryOut]:
    """The connection's last ``KEEP`` verified deliveries, newest first."""
    with Session(hub.db) as session:
        _owned(session, account_id, connection_id)
        rows = session.scalars(
            select(SourceDelivery)
            .where(SourceDelivery.connection_id == connection_id)
            .order_by(*_NEWEST_FIRST)
            .limit(KEEP)
        )
        return [
            DeliveryOut(
                id=r.id,
                received_at=r.received_at,
                status=r.status,
                kind=r.kind,
                reason=r.reason,
                events=r.events,
            )
            for r in rows
        ]


class _Lookup(Lookup):
    """What a source may ask of one account, read from the hub's database."""

    def __init__(self, hub: Hub, account_id: str, source: str) -> None:
        self.hub, self.account_id, self.source = hub, account_id, source

    def booking(self, uid: str) -> Booking | None:
        """The booking ``uid`` names: known under it, or under the uid another source's alias
        gives it (a Stripe payment naming Cal.com's new uid of a rescheduled booking)."""
        with self.hub.db.connect() as conn:
            payload = conn.scalar(self._latest(uid))
            if payload is None:
                aliased = conn.scalar(
                    select(SourceAlias.booking_uid)
                    .where(SourceAlias.account_id == self.account_id, SourceAlias.key == uid[:500])
                    .limit(1)
                )
                payload = conn.scalar(self._latest(aliased)) if aliased else None
        return None if payload is None else Booking.model_validate(payload["booking"])

    def _latest(self, uid: str) -> Select[tuple[dict[str, Any]]]:
        return (
            select(Event.payload)
            .where(
                Event.account_id == self.account_id,
                Event.booking_uid == uid,
                ~Event.event_id.startswith("test_"),
            )
            .order_by(Event.occurred_at.desc(), Event.id.desc())
            .limit(1)
        )

    def alias(self, key: str) -> str | None:
        with self.hub.db.connect() as conn:
            return conn.scalar(
                select(SourceAlias.booking_uid).where(
                    SourceAlias.account_id == self.account_id,
                    SourceAlias.source == self.source,
                    SourceAlias.key == key[:500],
                )
            )

    def remember(self, key: str, uid: str) -> None:
        row = {"account_id": self.account_id, "source": self.source, "key": key[:500]}
        with self.hub.db.begin() as conn:
            insert_ignoring(conn, SourceAlias, {**row, "booking_uid": uid})


@dataclass(frozen=True)
class Received:
    """What a provider's request came to: the answer's status and body."""

    status: int
    body: dict[str, Any]


def _kind(payload: Any) -> str | None:
    """The provider's event type, for the deliveries list: the common spellings."""
    if not isinstance(payload, dict):
        return None
    for key in ("triggerEvent", "event", "type"):
        value = payload.get(key)
        if isinstance(value, str):
            return value[:200]
    return None


def _keep(
    hub: Hub,
    connection_id: str,
    status: str,
    kind: str | None,
    reason: str | None,
    events: list[dict[str, Any]],
) -> None:
    """Add a delivery to the connection's list and drop those beyond the last ``KEEP``."""
    mine = SourceDelivery.connection_id == connection_id
    with hub.db.begin() as conn:
        conn.execute(
            insert(SourceDelivery).values(
                id=new_id("sdl"),
                connection_id=connection_id,
                seq=select(func.coalesce(func.max(SourceDelivery.seq), 0) + 1)
                .where(mine)
                .scalar_subquery(),
                received_at=hub.clock(),
                status=status,
                kind=kind,
                reason=reason,
                events=events,
            )
        )
        kept = select(SourceDelivery.id).where(mine).order_by(*_NEWEST_FIRST).limit(KEEP)
        conn.execute(
            delete(SourceDelivery).where(mine, SourceDelivery.id.not_in(kept.scalar_subquery()))
        )


def receive(hub: Hub, connection_id: str, headers: Mapping[str, str], body: bytes) -> Received:
    """Verify, translate and ingest one request a provider made to a connection's URL."""
    with hub.db.connect() as conn:
        columns = (SourceConnection.account_id, SourceConnection.type, SourceConnection.settings)
        found = select(*columns).where(SourceConnection.id == connection_id)
        row = conn.execute(found).first() if is_id(connection_id, "src") else None
    source = hub.registry.sources.get(row.type) if row is not None else None
    if row is None or source is None:
        raise NotFound("no such source connection")
    settings = hub.sealer.open(source.settings, row.settings)
    try:
        source.verify(Inbound(headers, body, hub.clock()), settings)
    except SourceRefused as exc:
        metrics.source_request(source.name, "refused")
        log.info("source %s connection %s: refused: %s", source.name, connection_id, exc)
        raise InputError(
            f"the request is not signed by {source.title}: {exc}",
            [FieldError("signature", str(exc))],
            status=401,
            code="bad_signature",
        ) from None
    try:
        payload = json.loads(body)
    except RecursionError:
        deep = f"nested deeper than {MAX_JSON_DEPTH} levels"
        return _untranslatable(hub, connection_id, source.name, None, "body", deep)
    except ValueError as exc:  # not UTF-8, not JSON, a number of thousands of digits
        return _untranslatable(hub, connection_id, source.name, None, "body", f"not JSON: {exc}")
    where = too_deep(payload)
    if where is not None:
        deep = f"nested deeper than {MAX_JSON_DEPTH} levels"
        return _untranslatable(hub, connection_id, source.name, _kind(payload), where, deep)
    kind = _kind(payload)
    if not isinstance(payload, dict):
        return _untranslatable(
            hub, connection_id, source.name, kind, "body", "expected a JSON object"
        )
    try:
        translated = source.translate(payload, _Lookup(hub, row.account_id, source.name))
    except Untranslatable as exc:
        return _untranslatable(hub, connection_id, source.name, kind, exc.field, exc.message)
    except ValidationError as exc:  # the booking event it built is not valid
        [first, *_] = pydantic_fields(exc, "event")
        return _untranslatable(hub, connection_id, source.name, kind, first.field, first.message)
    return _ingest(hub, connection_id, row.account_id, source, kind, translated)


def _untranslatable(
    hub: Hub, connection_id: str, source_name: str, kind: str | None, field: str, message: str
) -> NoReturn:
    _keep(hub, connection_id, UNTRANSLATABLE, kind, f"{field}: {message}", [])
    metrics.source_request(source_name, UNTRANSLATABLE)
    raise InputError(
        "the payload cannot be translated into a booking event",
        [FieldError(field, message)],
        code="untranslatable",
    )


def _ingest(
    hub: Hub,
    connection_id: str,
    account_id: str,
    source: SourceType,
    kind: str | None,
    translated: Translated,
) -> Received:
    answers, made = [], []
    for event in translated.events:
        ingested = hub.emit(event, account_id=account_id, source=source.name)
        answers.append(ingested.answer)
        made.append(
            {
                "id": event.id,
                "type": event.type,
                "booking_uid": event.booking.uid,
                "replayed": ingested.replayed,
            }
        )
    status = TRANSLATED if made else IGNORED
    _keep(hub, connection_id, status, kind, translated.note, made)
    metrics.source_request(source.name, status)
    body: dict[str, Any] = {"events": answers, "note": translated.note}
    return Received(200 if made else 202, body)


def sample(hub: Hub, account_id: str, connection_id: str) -> Received:
    """Post the source's sample payload, signed as the provider signs it with the connection's
    secret, through the same path a provider's request takes: the dashboard's "send a sample"."""
    with Session(hub.db) as session:
        row = _owned(session, account_id, connection_id)
        source = _type(hub, row.type)
        settings = hub.sealer.open(source.settings, row.settings)
    now = hub.clock()
    body = json.dumps(source.sample(now)).encode()
    return receive(hub, connection_id, source.sign(body, settings, now), body)
