"""Test before you enable: the dry run of a workflow, as its recipients would see it."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Template

from .. import testruns, workflows
from ..engine import Hub
from ..models import sample_event
from ..offload import offload
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
