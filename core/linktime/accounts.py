"""Accounts and their API keys. A key is shown once and stored as a SHA-256 hash (keys are
256-bit random, so a slow hash buys nothing)."""

from __future__ import annotations

import hashlib
import zoneinfo
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .engine import Hub
from .errors import InputError, NotFound, pydantic_fields
from .storage import READ_ONLY, Account, ApiKey, new_id, new_secret

KEY_PREFIX = "lt_"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class NewAccount:
    id: str
    name: str
    plan: str
    api_key: str


def create_account(hub: Hub, name: str, plan: str) -> NewAccount:
    """A new account on ``plan``, one of the operator's plans (``Settings.plans``)."""
    if plan not in hub.settings.plans:
        known = ", ".join(hub.settings.plans)
        raise ValueError(f"unknown plan {plan!r}; the operator's plans: {known}")
    now = hub.clock()
    account = Account(id=new_id("acc"), name=name, plan=plan, created_at=now)
    row, key = _new_key(account.id, now)
    with Session(hub.db, expire_on_commit=False) as session, session.begin():
        session.add(account)
        session.flush()
        session.add(row)
    return NewAccount(account.id, name, plan, key)


def authenticate(hub: Hub, key: str) -> str | None:
    """The account id a live API key belongs to, or None."""
    if not key.startswith(KEY_PREFIX):
        return None
    with hub.db.connect().execution_options(**{READ_ONLY: True}) as conn:
        return conn.scalar(
            select(ApiKey.account_id).where(
                ApiKey.key_hash == _hash(key), ApiKey.revoked_at.is_(None)
            )
        )


class KeyOut(BaseModel):
    id: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class NewKey(KeyOut):
    key: str = Field(description="Shown this once; only its hash is stored")


def _new_key(account_id: str, now: datetime) -> tuple[ApiKey, str]:
    key = KEY_PREFIX + new_secret()
    row = ApiKey(
        id=new_id("key"),
        account_id=account_id,
        key_hash=_hash(key),
        prefix=key[:10],
        created_at=now,
    )
    return row, key


def create_key(hub: Hub, account_id: str) -> NewKey:
    row, key = _new_key(account_id, hub.clock())
    with Session(hub.db, expire_on_commit=False) as session, session.begin():
        session.add(row)
    return NewKey(id=row.id, prefix=row.prefix, created_at=row.created_at, revoked_at=None, key=key)


def list_keys(hub: Hub, account_id: str) -> list[KeyOut]:
    with Session(hub.db) as session:
        rows = session.scalars(
            select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)
        )
        return [KeyOut.model_validate(r, from_attributes=True) for r in rows]


def revoke_key(hub: Hub, account_id: str, key_id: str) -> KeyOut:
    """Revoke a key; the account's last live key cannot be revoked (it would lock it out)."""
    with Session(hub.db, expire_on_commit=False) as session, session.begin():
        session.get(Account, account_id, with_for_update=True)
        row = session.get(ApiKey, key_id)
        if row is None or row.account_id != account_id:
            raise NotFound(f"no API key {key_id!r}")
        live = session.scalar(
            select(func.count()).where(ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
        )
        if row.revoked_at is None and live == 1:
            raise InputError(
                "this is the account's last live API key; create another first",
                status=409,
                code="last_key",
            )
        row.revoked_at = row.revoked_at or hub.clock()
    return KeyOut.model_validate(row, from_attributes=True)


class Preferences(BaseModel):
    """What the dashboard remembers for an account. ``timezone`` is an IANA name (None: the
    browser's); the test recipients are where "send a test to me" goes."""

    timezone: str | None = Field(None, max_length=64)
    test_email: str | None = Field(None, max_length=320)
    test_phone: str | None = Field(None, max_length=40)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None and not known_timezone(value):
            raise ValueError(f"{value[:64]!r} is not a timezone name like 'Europe/Berlin'")
        return value


# Files in the zone database that are no zone to choose: the machine's own zone, and the
# compiler's and the tz project's placeholders.
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() - NOT_ZONES)


def known_timezone(name: str) -> bool:
    """Whether ``name`` is an IANA zone (``Europe/Berlin``, ``UTC``) this server knows."""
    return name in _zones()


def get_preferences(hub: Hub, account_id: str) -> Preferences:
    with hub.db.connect() as conn:
        stored = conn.scalar(select(Account.preferences).where(Account.id == account_id))
    if stored is None:
        raise NotFound(f"no account {account_id!r}")
    return Preferences.model_validate(stored)


def set_preferences(hub: Hub, account_id: str, **changes: str | None) -> Preferences:
    """Change some preferences, keeping the others; raises InputError naming a bad one."""
    with Session(hub.db) as session, session.begin():
        account = session.get(Account, account_id, with_for_update=True)
        if account is None:
            raise NotFound(f"no account {account_id!r}")
        try:
            merged = Preferences.model_validate({**account.preferences, **changes})
        except ValidationError as exc:
            raise InputError("the preferences are not valid", pydantic_fields(exc)) from None
        account.preferences = merged.model_dump()
    return merged
