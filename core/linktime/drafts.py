"""The workflow editor's drafts: what a post of the editor's form came to, kept on the server
so that every post answers with a redirect to a page that shows it (Back and reload are then
GETs). A draft is its account's only; a day after it was written it is deleted."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .engine import Hub
from .errors import NotFound
from .storage import Draft, new_secret

KEPT = timedelta(days=1)
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


@dataclass(frozen=True)
class DraftOut:
    id: str
    workflow_id: str | None
    created_workflow_id: str | None
    form: dict[str, Any]
    outcome: dict[str, Any]


class AlreadyCreated(Exception):
    """The draft has already created a workflow (another post of it was first)."""


def new_token() -> str:
    return new_secret(24)


def _out(row: Draft) -> DraftOut:
    return DraftOut(row.id, row.workflow_id, row.created_workflow_id, row.form, row.outcome)


def get(hub: Hub, account_id: str, token: str) -> DraftOut:
    """The account's draft ``token``; another account's, or none, is NotFound."""
    with Session(hub.db) as session:
        row = session.get(Draft, token) if TOKEN.fullmatch(token) else None
        if row is None or row.account_id != account_id:
            raise NotFound("This draft is no longer kept: open the workflow again.")
        return _out(row)


def find(hub: Hub, account_id: str, token: str) -> DraftOut | None:
    try:
        return get(hub, account_id, token)
    except NotFound:
        return None


def write(
    hub: Hub,
    account_id: str,
    token: str,
    workflow_id: str | None,
    form: dict[str, Any],
    outcome: dict[str, Any],
) -> str:
    """Store the draft as ``token`` (a token not the account's, or malformed, gets a new one,
    whose value is returned); drafts older than a day go."""
    now = hub.clock()
    for attempt in range(2):
        try:
            with Session(hub.db) as session, session.begin():
                session.execute(delete(Draft).where(Draft.created_at < now - KEPT))
                row = session.get(Draft, token) if TOKEN.fullmatch(token) else None
                if row is None or row.account_id != account_id:
                    token = token if row is None and TOKEN.fullmatch(token) else new_token()
                    row = Draft(id=token, account_id=account_id, created_workflow_id=None)
                    session.add(row)
                row.workflow_id, row.form, row.outcome = workflow_id, form, outcome
                row.created_at = now
        except IntegrityError:
            # Two posts of one new draft at once: the other wrote the row first; update it.
            if attempt:
                raise
        else:
            break
    return token


def claim(session: Session, token: str, workflow_id: str) -> None:
    """Record, inside the transaction creating it, that draft ``token`` created ``workflow_id``;
    raises AlreadyCreated when it already created one (the transaction must then roll back)."""
    done = session.execute(
        update(Draft)
        .where(Draft.id == token, Draft.created_workflow_id.is_(None))
        .values(created_workflow_id=workflow_id)
    )
    if getattr(done, "rowcount", 0) != 1:
        raise AlreadyCreated(token)


def forget_created(hub: Hub, token: str) -> None:
    """The workflow the draft created was deleted: the draft may create it again."""
    with Session(hub.db) as session, session.begin():
        session.execute(update(Draft).where(Draft.id == token).values(created_workflow_id=None))


def created(hub: Hub, token: str) -> str | None:
    with Session(hub.db) as session:
        return session.scalar(select(Draft.created_workflow_id).where(Draft.id == token))
