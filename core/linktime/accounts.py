"""Accounts and their API keys. A key is shown once and stored as a SHA-256 hash (keys are
256-bit random, so a slow hash buys nothing)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .engine import Hub
from .storage import Account, ApiKey, new_id, new_secret

PLANS = ("free", "pro", "business")
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
    if plan not in PLANS:
        raise ValueError(f"unknown plan {plan!r}; expected one of {', '.join(PLANS)}")
    now = hub.clock()
    account = Account(id=new_id("acc"), name=name, plan=plan, created_at=now)
    key = KEY_PREFIX + new_secret()
    with Session(hub.db, expire_on_commit=False) as session, session.begin():
        session.add(account)
        session.flush()
        session.add(
            ApiKey(
                id=new_id("key"),
                account_id=account.id,
                key_hash=_hash(key),
                prefix=key[:10],
                created_at=now,
            )
        )
    return NewAccount(account.id, name, plan, key)


def authenticate(hub: Hub, key: str) -> str | None:
    """The account id a live API key belongs to, or None."""
    if not key.startswith(KEY_PREFIX):
        return None
    with hub.db.connect() as conn:
        return conn.scalar(
            select(ApiKey.account_id).where(
                ApiKey.key_hash == _hash(key), ApiKey.revoked_at.is_(None)
            )
        )
