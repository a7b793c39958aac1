"""The account's suppression list: addresses it may no longer send to, one list for every
channel. A number that replied STOP is not texted, called or messaged on WhatsApp; an email
address that unsubscribed gets no email. Steps to a suppressed address end ``opted_out``."""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Row, and_, delete, or_, select

from .errors import FieldError, InputError
from .storage import Suppression, insert_ignoring

if TYPE_CHECKING:
    from .engine import Hub

# Why an address is on the list, as stored in ``source``.
SMS_STOP = "sms_stop"  # the number replied STOP (or STOPALL, UNSUBSCRIBE, …)
PROVIDER = "provider"  # the provider refused to send to it (Twilio 21610)
UNSUBSCRIBE = "unsubscribe"  # the email's one-click unsubscribe
MANUAL = "manual"  # added by the account's user
SOURCES = (SMS_STOP, PROVIDER, UNSUBSCRIBE, MANUAL)

_SEPARATORS_RE = re.compile(r"[\s().-]")
_PHONE_QUERY_RE = re.compile(r"^\+?[0-9\s().-]+$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize(address: str) -> str:
    """The form the list keeps an address in: an email address in lower case, a phone number in
    E.164 as channels dial it (``+44 (0)20 7946 0958`` is ``+442079460958``; ``whatsapp:+1…`` is
    ``+1…``). Raises ``InputError`` for anything else."""
    value = address.strip()
    if "@" in value:
        if len(value) > 320 or not _EMAIL_RE.match(value):
            raise _refused(f"{address!r} is not an email address")
        # lower(), not casefold(): "Straße" and "strasse" are two mailboxes.
        return value.lower()
    raw = value.removeprefix("whatsapp:").removeprefix("tel:")
    try:
        number = phonenumbers.parse(raw, None) if raw.startswith("+") and len(raw) <= 40 else None
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_possible_number(number):
        raise _refused(
            f"{address!r} is neither an email address nor a phone number in international "
            "format (e.g. +14155550123)"
        )
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _refused(message: str) -> InputError:
    return InputError("the address is not valid", [FieldError("address", message)])


_COLUMNS = tuple(Suppression.__table__.columns)


def lookup(conn: Connection, account_id: str, address: str) -> Suppression | None:
    """The list's entry for ``address`` (normalized here), or None."""
    try:
        key = normalize(address)
    except InputError:
        return None
    # A Connection (not a Session) gives rows, not objects: the entry is built from its row.
    row = conn.execute(
        select(*_COLUMNS).where(Suppression.account_id == account_id, Suppression.address == key)
    ).first()
    return None if row is None else Suppression(**row._mapping)


def add(
    conn: Connection, account_id: str, address: str, reason: str, source: str, now: datetime
) -> bool:
    """Put ``address`` on the list (kept as first added when already there); whether it was
    new."""
    return insert_ignoring(
        conn,
        Suppression,
        {
            "account_id": account_id,
            "address": normalize(address),
            "reason": reason[:500],
            "source": source,
            "created_at": now,
        },
    )


def remove(conn: Connection, account_id: str, address: str) -> bool:
    """Take ``address`` off the list; whether it was on it."""
    deleted = conn.execute(
        delete(Suppression).where(
            Suppression.account_id == account_id, Suppression.address == normalize(address)
        )
    )
    return deleted.rowcount > 0


# -- the read model: the list as the API and the dashboard show it --------------------------------

MAX_QUERY = 320
MAX_LIMIT = 200
MAX_REASON = 500


class SuppressionOut(BaseModel):
    address: str = Field(description="E.164 phone number or email address (lower case)")
    reason: str
    source: str = Field(
        description="sms_stop: the number replied STOP; provider: the provider reported an "
        "opt-out; unsubscribe: the email's unsubscribe link; manual: added by the account"
    )
    created_at: datetime


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_cursor: str | None = Field(description="Pass as cursor for the next (older) page")


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(max_length=MAX_QUERY, description="A phone number (+1…) or email")
    reason: str | None = Field(None, max_length=MAX_REASON)


def _cursor(entry: Row[Any]) -> str:
    value = f"{entry.created_at.isoformat()}\n{entry.address}"
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def _read_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, address = value.partition("\n")
        at = datetime.fromisoformat(moment)
        if at.tzinfo is None:
            raise ValueError(moment)
        return at, address
    except ValueError:
        raise InputError(
            "the page is not valid",
            [FieldError("cursor", "give the next_cursor of the previous page")],
        ) from None


def page(
    hub: Hub,
    account_id: str,
    q: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> SuppressionPage:
    """The account's list, newest first; ``q`` keeps the addresses that contain it (in any
    case)."""
    q = (q or "").strip() or None
    errors = []
    if q is not None and len(q) > MAX_QUERY:
        errors.append(FieldError("q", f"give at most {MAX_QUERY} characters"))
    if not 1 <= limit <= MAX_LIMIT:
        errors.append(FieldError("limit", f"give a number from 1 to {MAX_LIMIT}"))
    if errors:
        raise InputError("the search is not valid", errors)
    query = (
        select(*_COLUMNS)
        .where(Suppression.account_id == account_id)
        .order_by(Suppression.created_at.desc(), Suppression.address.desc())
        .limit(limit + 1)
    )
    if q is not None:
        # A number is searched for as it is kept: written with spaces or dashes too.
        wanted = _SEPARATORS_RE.sub("", q) if _PHONE_QUERY_RE.match(q) else q.lower()
        query = query.where(Suppression.address.contains(wanted, autoescape=True))
    if cursor is not None:
        at, address = _read_cursor(cursor)
        query = query.where(
            or_(
                Suppression.created_at < at,
                and_(Suppression.created_at == at, Suppression.address < address),
            )
        )
    with hub.db.connect() as conn:
        rows = conn.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return SuppressionPage(
        items=[SuppressionOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=_cursor(rows[-1]) if more else None,
    )


def entry(conn: Connection, account_id: str, address: str) -> SuppressionOut | None:
    found = lookup(conn, account_id, address)
    return None if found is None else SuppressionOut.model_validate(found, from_attributes=True)


def add_manual(hub: Hub, account_id: str, data: SuppressionIn) -> tuple[SuppressionOut, bool]:
    """Add an address by hand: the entry, and whether it was new (an address already on the
    list keeps its first entry)."""
    reason = (data.reason or "").strip() or "added by the account"
    with hub.db.begin() as conn:
        added = add(conn, account_id, data.address, reason, MANUAL, hub.clock())
        found = entry(conn, account_id, data.address)
    assert found is not None  # just added, or already there
    return found, added


def remove_manual(hub: Hub, account_id: str, address: str) -> bool:
    """Take an address off the list by hand; whether it was on it."""
    with hub.db.begin() as conn:
        return remove(conn, account_id, address)
