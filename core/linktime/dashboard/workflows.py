"""The workflows list: enable/disable, delete, start from a template."""

from __future__ import annotations

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from .. import workflows
from ..engine import Hub
from ..errors import InputError
from ..offload import offload
from ..workflows import WorkflowOut
from .app import (
    AnyRequest,
    Me,
    action_title,
    flash,
    page,
    safe_next,
    see_other,
    shown_secrets,
    trigger_text,
    usage,
)


@get("/workflows")
async def workflows_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Template:
    items = await offload(workflows.list_all, hub, me.account_id)
    plan = await usage(hub, me)
    offered = await offload(workflows.list_templates, hub, me.account_id)
    rows = [
        {
            "id": w.id,
            "name": w.name,
            "enabled": w.enabled,
            "trigger": trigger_text(hub, w.trigger, w.offset_minutes),
            "actions": [action_title(hub, s.action) for s in w.steps],
        }
        for w in items
    ]
    templates = [
        {
            "name": t.name,
            "title": t.title,
            "description": t.description,
            "trigger": trigger_text(hub, t.trigger, t.offset_minutes),
            "actions": [action_title(hub, a) for a in t.actions],
        }
        for t in offered
    ]
    return page(
        request,
        "workflows.html",
        me=me,
        rows=rows,
        usage=plan,
        templates=templates,
        broken=hub.registry.broken,
    )


@post("/workflows/{workflow_id:str}/toggle")
async def toggle(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
) -> Redirect:
    form = await request.form()
    enabled = str(form.get("enabled")) == "true"
    try:
        wf = await offload(workflows.set_enabled, hub, me.account_id, workflow_id, enabled)
    except InputError as exc:
        flash(request, f"Could not {'enable' if enabled else 'disable'}: {exc}", "error")
    else:
        flash(request, f"“{wf.name}” is {'enabled' if wf.enabled else 'disabled'}.")
    return see_other(safe_next(form.get("back")))


@post("/workflows/{workflow_id:str}/delete")
async def delete_workflow(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
) -> Redirect:
    wf = await offload(workflows.get, hub, me.account_id, workflow_id)
    await offload(workflows.delete, hub, me.account_id, workflow_id)
    flash(request, f"Deleted “{wf.name}”.")
    return see_other("/workflows")


def _from_template(
    hub: Hub, account_id: str, name: str
) -> tuple[WorkflowOut, list[dict[str, str]]]:
    """Create a workflow from a template; also returns the secrets generated for it (shown
    once)."""
    created, generated = workflows.create_from_template(hub, account_id, name)
    return created, shown_secrets(generated)


@post("/workflows/from-template")
async def create_from_template(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Redirect:
    form = await request.form()
    name = str(form.get("template", ""))
    try:
        created, secrets = await offload(_from_template, hub, me.account_id, name)
    except InputError as exc:
        flash(request, f"The template could not be used: {exc}", "error")
        return see_other("/workflows")
    flash(request, f"Created “{created.name}” from a template: review it, test it, enable it.")
    for s in secrets:
        flash(request, "Generated", "secret", **s)
    return see_other(f"/workflows/{created.id}")


HANDLERS = [workflows_page, toggle, delete_workflow, create_from_template]
