"""What the dashboard reads beyond the public service functions: the event behind a run."""

from __future__ import annotations

from sqlalchemy import select

from ..engine import Hub
from ..storage import Event, Run


def event_of_run(hub: Hub, account_id: str, run_id: str) -> str | None:
    """The event id (as the caller sent it) that started a run."""
    with hub.db.connect() as conn:
        return conn.scalar(
            select(Event.event_id)
            .join(Run, Run.event_id == Event.id)
            .where(Run.id == run_id, Run.account_id == account_id)
        )
