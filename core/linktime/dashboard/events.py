"""The event inspector: what an event did, and why each workflow did or did not run."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template

from .. import runs
from ..engine import Hub
from ..offload import offload
from .app import (
    AnyRequest,
    Me,
    page,
)


@get("/events/{event_id:str}")
async def event_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], event_id: FromPath[str]
) -> Template:
    found = await offload(runs.inspect_event, hub, me.account_id, event_id)
    by_id = {r.id: r for r in found.runs}
    decisions = [
        {
            "workflow_id": d.workflow_id,
            "name": d.name,
            "run_id": d.run_id,
            "reason": d.reason,
            "run": by_id.get(d.run_id) if d.run_id else None,
        }
        for d in found.decisions
    ]
    return page(
        request,
        "event.html",
        me=me,
        event=found,
        ran=[d for d in decisions if d["reason"] is None],
        not_run=[d for d in decisions if d["reason"] is not None],
    )


HANDLERS = [event_page]
