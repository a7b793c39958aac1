"""The account's suppression list: addresses it may no longer send to, one list for every
channel. A number that replied STOP is not texted, called or messaged on WhatsApp; an email
address that unsubscribed gets no email. Steps to a suppressed address end ``opted_out``."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import Connection, delete, select

from .errors import FieldError, InputError
from .storage import Suppression, insert_ignoring

# Why an address is on the list, as stored in ``source``.
SMS_STOP = "sms_stop"  # the number replied STOP (or STOPALL, UNSUBSCRIBE, …)
PROVIDER = "provider"  # the provider refused to send to it (Twilio 21610)
UNSUBSCRIBE = "unsubscribe"  # the email's one-click unsubscribe
MANUAL = "manual"  # added by the account's user
SOURCES = (SMS_STOP, PROVIDER, UNSUBSCRIBE, MANUAL)

_PHONE_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SEPARATORS_RE = re.compile(r"[\s().-]")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize(address: str) -> str:
    """The form the list keeps an address in: an email address casefolded, a phone number in
    E.164 without the channel's prefix (``whatsapp:+1…`` is ``+1…``). Raises ``InputError``
    for anything else."""
    value = address.strip()
    if "@" in value:
        if len(value) > 320 or not _EMAIL_RE.match(value):
            raise _refused(f"{address!r} is not an email address")
        return value.casefold()
    number = _SEPARATORS_RE.sub("", value.removeprefix("whatsapp:").removeprefix("tel:"))
    if not _PHONE_RE.match(number):
        raise _refused(
            f"{address!r} is neither an email address nor a phone number in international "
            "format (e.g. +14155550123)"
        )
    return number


def _refused(message: str) -> InputError:
    return InputError("the address is not valid", [FieldError("address", message)])


def lookup(conn: Connection, account_id: str, address: str) -> Suppression | None:
    """The list's entry for ``address`` (normalized here), or None."""
    try:
        key = normalize(address)
    except InputError:
        return None
    return conn.scalar(
        select(Suppression).where(Suppression.account_id == account_id, Suppression.address == key)
    )


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
