"""What the dashboard reads beyond the public service functions: stored secrets it must keep when
a form leaves them blank, and lookups for service functions that may not be installed (the
pages that need them say so instead of failing)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..crypto import revealed, secret_fields
from ..engine import Hub
from ..errors import NotFound
from ..storage import Event, Integration, Run, Workflow, WorkflowStep


def optional(module: str, name: str) -> Callable[..., Any] | None:
    """``linktime.<module>.<name>`` if this installation has it."""
    try:
        found = importlib.import_module(f"linktime.{module}")
    except ImportError:
        return None
    fn = getattr(found, name, None)
    return fn if callable(fn) else None


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


def runs(
    hub: Hub,
    account_id: str,
    *,
    workflow_id: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[Any]:
    """An account's latest runs, from ``linktime.runs.list_runs`` when installed."""
    list_runs = optional("runs", "list_runs")
    if list_runs is not None:
        return list(list_runs(hub, account_id, workflow_id=workflow_id, status=status, limit=limit))
    query = select(Run).where(Run.account_id == account_id)
    if workflow_id:
        query = query.where(Run.workflow_id == workflow_id)
    if status:
        query = query.where(Run.status == status)
    with Session(hub.db) as session:
        rows = session.scalars(query.order_by(Run.created_at.desc()).limit(limit)).all()
        return [
            {
                "id": r.id,
                "workflow_id": r.workflow_id,
                "workflow_name": r.workflow_name,
                "trigger": r.trigger,
                "status": r.status,
                "note": r.note,
                "due_at": r.due_at,
                "created_at": r.created_at,
                "finished_at": r.finished_at,
            }
            for r in rows
        ]


def event_of_run(hub: Hub, account_id: str, run_id: str) -> str | None:
    """The event id (as the caller sent it) that started a run."""
    with hub.db.connect() as conn:
        return conn.scalar(
            select(Event.event_id)
            .join(Run, Run.event_id == Event.id)
            .where(Run.id == run_id, Run.account_id == account_id)
        )


def event_runs(hub: Hub, account_id: str, event_id: str) -> dict[str, Any]:
    """An event and the runs it started (without ``linktime.events.inspect``)."""
    with Session(hub.db) as session:
        event = session.scalars(
            select(Event).where(Event.account_id == account_id, Event.event_id == event_id)
        ).first()
        if event is None:
            raise NotFound(f"no event {event_id!r}")
        rows = session.scalars(
            select(Run).where(Run.event_id == event.id).order_by(Run.created_at)
        ).all()
        return {
            "event_id": event.event_id,
            "type": event.type,
            "received_at": event.received_at,
            "ran": [
                {
                    "run_id": r.id,
                    "workflow_id": r.workflow_id,
                    "name": r.workflow_name,
                    "status": r.status,
                }
                for r in rows
            ],
            "not_run": None,
        }
