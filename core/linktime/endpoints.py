"""The health of the endpoints actions deliver to (``ActionType.endpoint``: a webhook's URL),
kept the way Svix keeps it: an endpoint that answers ``410 Gone`` is disabled at once, one that
failed every attempt for ``DISABLE_AFTER`` is disabled, and a disabled endpoint's steps fail
with ``endpoint_disabled``, unsent, until the account re-enables it. Test sends are not held
back by it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, select, update

from .actions import Outcome, Result
from .storage import Endpoint, insert_ignoring, new_id

ACTIVE = "active"
DISABLED = "disabled"
DISABLE_AFTER = timedelta(days=5)
DISABLED_CODE = "endpoint_disabled"


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


@dataclass(frozen=True)
class Health:
    id: str
    url: str
    state: str
    disabled_reason: str | None
    failing_since: datetime | None

    def refusal(self) -> Result | None:
        """The result of a step to this endpoint while it is disabled, or None."""
        if self.state != DISABLED:
            return None
        return Result.fail(
            f"the endpoint {self.url} is disabled ({self.disabled_reason}): re-enable it in "
            "Settings → Webhooks once it works again",
            error_code=DISABLED_CODE,
        )


_COLUMNS = (
    Endpoint.id,
    Endpoint.url,
    Endpoint.state,
    Endpoint.disabled_reason,
    Endpoint.failing_since,
)


def _find(conn: Connection, account_id: str, action: str, digest: str) -> Health | None:
    row = conn.execute(
        select(*_COLUMNS).where(
            Endpoint.account_id == account_id,
            Endpoint.action == action,
            Endpoint.url_hash == digest,
        )
    ).first()
    return None if row is None else Health(*row)


def ensure(db: Engine, account_id: str, action: str, url: str, now: datetime) -> Health:
    """The endpoint ``url`` of ``action`` for the account, known from its first delivery on."""
    digest = url_hash(url)
    with db.connect() as conn:
        found = _find(conn, account_id, action, digest)
    if found is not None:
        return found
    with db.begin() as conn:
        insert_ignoring(
            conn,
            Endpoint,
            {
                "id": new_id("ep"),
                "account_id": account_id,
                "action": action,
                "url": url,
                "url_hash": digest,
                "state": ACTIVE,
                "disabled_reason": None,
                "disabled_at": None,
                "failing_since": None,
                "created_at": now,
                "updated_at": now,
            },
        )
        found = _find(conn, account_id, action, digest)
    assert found is not None
    return found


def observe(db: Engine, endpoint: Health, result: Result, now: datetime) -> None:
    """Keep the endpoint's health after an attempt to it; writes only when it changes."""
    if result.error_code == DISABLED_CODE:
        return
    change: dict[str, object] | None = None
    if result.outcome is Outcome.SUCCEEDED:
        if endpoint.failing_since is not None:
            change = {"failing_since": None}
    elif result.http_status == 410:
        change = _disable("it answered 410 Gone", now)
    elif endpoint.failing_since is None:
        change = {"failing_since": now}
    elif now - endpoint.failing_since >= DISABLE_AFTER:
        days = DISABLE_AFTER.days
        change = _disable(f"every delivery failed for {days} days", now)
    if change is None:
        return
    with db.begin() as conn:
        query = update(Endpoint).where(Endpoint.id == endpoint.id)
        if change.get("failing_since") is now:  # the first failure: only if none before
            query = query.where(Endpoint.failing_since.is_(None))
        conn.execute(query.values(**change, updated_at=now))


def _disable(reason: str, now: datetime) -> dict[str, object]:
    return {"state": DISABLED, "disabled_reason": reason, "disabled_at": now}


def enable(conn: Connection, account_id: str, endpoint_id: str, now: datetime) -> bool:
    """Re-enable a disabled endpoint: its steps are sent again. Whether it is the account's."""
    changed = conn.execute(
        update(Endpoint)
        .where(Endpoint.id == endpoint_id, Endpoint.account_id == account_id)
        .values(
            state=ACTIVE, disabled_reason=None, disabled_at=None, failing_since=None, updated_at=now
        )
    )
    return changed.rowcount == 1
