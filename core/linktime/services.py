"""``ActionContext.services`` backed by a hub's database and settings, and the signed keys in
the URLs handed out with messages: a callback URL's account key, an unsubscribe token."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from . import bookings, credits, suppressions
from .actions import AccountServices
from .conditions import Live
from .models import BookingEvent
from .storage import Event

if TYPE_CHECKING:
    from .engine import Hub

# Booking events that make a calendar invite's SEQUENCE go up.
CHANGES = ("booking.rescheduled", "booking.cancelled")


def _mac(secret: str, purpose: str, value: str) -> str:
    key = hashlib.sha256(f"linktime:{purpose}:{secret}".encode()).digest()
    digest = hmac.new(key, value.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def _same(sent: str, expected: str) -> bool:
    """A constant-time comparison of a MAC as sent (any text: compare_digest refuses non-ASCII
    str) with the one expected."""
    return hmac.compare_digest(sent.encode(), expected.encode())


def account_key(secret: str, account_id: str) -> str:
    """The path segment that says whose a callback is: the account id and a MAC of it (no API
    key, nothing to guess from)."""
    return f"{account_id}.{_mac(secret, 'callback', account_id)}"


def account_of_key(secret: str, key: str) -> str | None:
    """The account a callback key was made for, or None for a key that was not made here."""
    account_id, _, mac = key.rpartition(".")
    if not account_id or not _same(mac, _mac(secret, "callback", account_id)):
        return None
    return account_id


def unsubscribe_token(secret: str, account_id: str, address: str) -> str:
    """A token naming the account and the (normalized) address it unsubscribes, MAC'd."""
    value = f"{account_id}\n{suppressions.normalize(address)}"
    encoded = base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")
    return f"{encoded}.{_mac(secret, 'unsubscribe', value)}"


def read_unsubscribe_token(secret: str, token: str) -> tuple[str, str] | None:
    """(account id, address) of a token ``unsubscribe_token`` made, or None."""
    encoded, _, mac = token.partition(".")
    try:
        value = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except ValueError:
        return None
    account_id, sep, address = value.partition("\n")
    if not sep or not _same(mac, _mac(secret, "unsubscribe", value)):
        return None
    return account_id, address


def _public(hub: Hub, path: str) -> str | None:
    """``path`` under ``LINKTIME_PUBLIC_URL``; None without it."""
    base = hub.settings.public_url
    return None if base is None else f"{base.rstrip('/')}{path}"


def callback_url(hub: Hub, account_id: str, name: str) -> str | None:
    """The account's URL of the callback ``name``; None without ``LINKTIME_PUBLIC_URL``."""
    return _public(hub, f"/v1/callbacks/{name}/{account_key(hub.secret_key(), account_id)}")


class StepServices(AccountServices):
    """The services of one step of one run (or of a test run)."""

    def __init__(
        self,
        hub: Hub,
        *,
        account_id: str,
        plan: str,
        step_id: str,
        booking_uid: str,
        occurred_at: datetime,
        cache: dict[str, Any] | None = None,
    ) -> None:
        self.hub = hub
        self.account_id = account_id
        self.plan = plan
        self.step_id = step_id
        self.booking_uid = booking_uid
        self.occurred_at = occurred_at
        # Shared by the steps one claim of the run executes: the booking is read once per
        # claim, and every wait ends a claim, so each step after a wait sees it anew.
        self.cache = {} if cache is None else cache

    def opted_out(self, address: str) -> str | None:
        with self.hub.db.connect() as conn:
            entry = suppressions.lookup(conn, self.account_id, address)
        if entry is None:
            return None
        return f"{entry.address} is on the suppression list: {entry.reason}"

    def take_credits(self, kind: str, amount: int) -> bool:
        plan = self.hub.settings.plan(self.plan)
        return credits.take(
            self.hub.db, self.account_id, plan, self.step_id, kind, amount, self.hub.clock()
        )

    def callback_url(self, name: str) -> str | None:
        return callback_url(self.hub, self.account_id, name)

    def unsubscribe_url(self, address: str) -> str | None:
        token = unsubscribe_token(self.hub.secret_key(), self.account_id, address)
        return _public(self.hub, f"/v1/unsubscribe/{token}")

    def booking_sequence(self) -> int:
        with self.hub.db.connect() as conn:
            count = conn.scalar(
                select(func.count()).where(
                    Event.account_id == self.account_id,
                    Event.booking_uid == self.booking_uid,
                    Event.type.in_(CHANGES),
                    Event.occurred_at <= self.occurred_at,
                    ~Event.event_id.startswith("test_"),
                )
            )
        return int(count or 0)

    def now(self) -> datetime:
        return self.hub.clock()

    def booking_now(self, event: BookingEvent) -> Live:
        live: Live | None = self.cache.get(LIVE)
        if live is None:
            with self.hub.db.connect() as conn:
                standing = bookings.now_standing(conn, self.account_id, self.booking_uid)
            live = self.cache[LIVE] = Live.of_event(event) if standing is None else standing.live
        return live


# Where a claim's steps keep the booking as read (``ActionContext.run_cache``): the engine
# drops it before each step of a run that has been through a wait, so each reads it anew.
LIVE = "linktime.booking_now"


class DryRunServices(StepServices):
    """A dry run's: it sends nothing, so it takes no credits; the rest reads as a send would."""

    def take_credits(self, kind: str, amount: int) -> bool:
        return True
