"""What the dashboard reads beyond the public service functions: the stored integration secrets
it must keep when a form leaves them blank ("unchanged"), and the event behind a run. Read
server-side only; never sent to the browser."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from ..engine import Hub
from ..storage import Event, Integration, Run


def integration_secrets(
    hub: Hub, account_id: str, name: str, model: type[BaseModel]
) -> dict[str, Any]:
    """The clear secrets of a connected integration (to keep them when left blank)."""
    with hub.db.connect() as conn:
        stored = conn.scalar(
            select(Integration.settings).where(
                Integration.account_id == account_id, Integration.name == name
            )
        )
    try:
        return hub.sealer.secrets(model, stored) if stored else {}
    except ValueError:  # cannot be decrypted: nothing to keep
        return {}


def event_of_run(hub: Hub, account_id: str, run_id: str) -> str | None:
    """The event id (as the caller sent it) that started a run."""
    with hub.db.connect() as conn:
        return conn.scalar(
            select(Event.event_id)
            .join(Run, Run.event_id == Event.id)
            .where(Run.id == run_id, Run.account_id == account_id)
        )
