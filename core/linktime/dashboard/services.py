"""What the dashboard reads beyond the public service functions: the stored secrets it must keep
when a form leaves them blank ("unchanged"), and the event behind a run. Read server-side only;
never sent to the browser."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..crypto import revealed, secret_fields
from ..engine import Hub
from ..errors import NotFound
from ..storage import Event, Integration, Run, Workflow, WorkflowStep


def _opened(hub: Hub, model: type[BaseModel], stored: dict[str, Any]) -> dict[str, Any]:
    """The clear values of a stored model's secrets ({} when they cannot be opened)."""
    names = secret_fields(model)
    if not names:
        return {}
    try:
        clear = revealed(hub.sealer.open(model, stored))
    except ValueError:
        return {}
    return {n: clear[n] for n in names if clear.get(n) is not None}


def step_secrets(
    hub: Hub, account_id: str, workflow_id: str
) -> dict[int, tuple[str, dict[str, Any]]]:
    """Position → (action, clear secrets) of a workflow's stored steps, to keep a secret whose
    input was left blank ("unchanged") when the workflow is saved again. Never sent out."""
    out: dict[int, tuple[str, dict[str, Any]]] = {}
    with Session(hub.db) as session:
        wf = session.get(Workflow, workflow_id)
        if wf is None or wf.account_id != account_id:
            raise NotFound(f"no workflow {workflow_id!r}")
        steps = session.scalars(
            select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id)
        ).all()
        for step in steps:
            action = hub.registry.actions.get(step.action)
            if action is not None:
                out[step.position] = (step.action, _opened(hub, action.settings, step.settings))
    return out


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
    return _opened(hub, model, stored) if stored else {}


def event_of_run(hub: Hub, account_id: str, run_id: str) -> str | None:
    """The event id (as the caller sent it) that started a run."""
    with hub.db.connect() as conn:
        return conn.scalar(
            select(Event.event_id)
            .join(Run, Run.event_id == Event.id)
            .where(Run.id == run_id, Run.account_id == account_id)
        )


def run_statuses(hub: Hub, account_id: str, run_ids: list[str]) -> dict[str, str]:
    """The current status of some of an account's runs."""
    if not run_ids:
        return {}
    with hub.db.connect() as conn:
        rows = conn.execute(
            select(Run.id, Run.status).where(Run.account_id == account_id, Run.id.in_(run_ids))
        ).all()
    return {r.id: r.status for r in rows}
