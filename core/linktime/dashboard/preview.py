"""Test before you enable: the dry run of a workflow, as its recipients would see it."""

from __future__ import annotations

from typing import Any

from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from .. import testruns, workflows
from ..engine import Hub
from ..models import sample_event
from ..offload import offload
from ..workflows import WorkflowIn
from .app import (
    AnyRequest,
    Me,
    page,
    trigger_text,
)


@get("/workflows/{workflow_id:str}/test")
async def test_workflow(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
    event_type: FromQuery[str | None] = None,
) -> Template:
    wf = await offload(workflows.get, hub, me.account_id, workflow_id)
    event_types = [t.name for t in hub.registry.triggers.values() if t.kind == "event"]
    chosen = event_type if event_type in event_types else None
    event = sample_event(chosen) if chosen else None
    preview = await offload(testruns.dry_run, hub, me.account_id, workflow_id, event)
    return page(
        request,
        "test.html",
        me=me,
        workflow=wf,
        steps=preview.steps,
        event=preview.event,
        event_types=event_types,
        chosen=chosen,
        trigger=trigger_text(hub, wf.trigger, wf.offset_minutes),
    )


HANDLERS = [test_workflow]


async def draft_panel(
    hub: Hub, me: Me, spec: WorkflowIn, workflow_id: str | None, event_type: str | None
) -> dict[str, Any]:
    """The Test panel for the editor's draft as it is on screen (not saved): the context the
    editor renders with ``{% include "_test_panel.html" %}``. ``workflow_id`` is the stored
    workflow the draft edits (its kept secrets), None for a new one."""
    # Interim: the saved version's dry run (issue 12 item 2 replaces this with the draft's).
    if workflow_id is None:
        return {"steps": [], "event": {}, "event_type": event_type}
    preview = await offload(testruns.dry_run, hub, me.account_id, workflow_id, None)
    return {"steps": preview.steps, "event": preview.event, "event_type": event_type}
