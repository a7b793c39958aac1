"""The workflows list: enable/disable, delete, start from a template."""

from __future__ import annotations

from typing import Any

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from .. import endpoints, plans, workflows
from ..actions import Template as WorkflowTemplate
from ..engine import Hub
from ..errors import InputError
from ..offload import offload
from ..workflows import StepOut, WorkflowOut
from .app import (
    AnyRequest,
    Me,
    action_title,
    connected_integrations,
    flash,
    page,
    safe_next,
    see_other,
    shown_secrets,
    toggle_blocked,
    trigger_text,
    usage,
)


def _missing_integrations(hub: Hub, steps: list[StepOut], connected: frozenset[str]) -> list[str]:
    """The integrations ``steps`` cannot be sent without that are not connected, each once
    (by each action's own rule: an email's sender name or a Slack incoming webhook needs none)."""
    needed = [
        action.integration
        for s in steps
        if (action := hub.registry.actions.get(s.action)) is not None
        and action.needs_connection(action.settings.model_construct(**s.settings))
    ]
    return list(dict.fromkeys(i for i in needed if i is not None and i not in connected))


def _template_row(hub: Hub, t: WorkflowTemplate, allowed: set[str]) -> dict[str, Any]:
    actions = [s.action for s in t.steps]
    installed = [hub.registry.actions[a] for a in actions if a in hub.registry.actions]
    return {
        "name": t.name,
        "title": t.title,
        "description": t.description,
        "trigger": trigger_text(hub, t.trigger, t.offset_minutes),
        "actions": [action_title(hub, a) for a in actions],
        # None: usable now; else the plan that includes it ("" when no plan does)
        "needs_plan": None
        if set(actions) <= allowed
        else plans.first_including(hub.settings.plans, installed) or "",
    }


@get("/workflows")
async def workflows_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Template:
    items = await offload(workflows.list_all, hub, me.account_id)
    plan = await usage(hub, me)
    connected = await offload(connected_integrations, hub, me.account_id)
    disabled = await offload(endpoints.disabled_by_workflow, hub, me.account_id)
    rows = [
        {
            "id": w.id,
            "name": w.name,
            "enabled": w.enabled,
            "paused_reason": w.paused_reason,
            "blocked": toggle_blocked(plan, w.enabled),
            "trigger": trigger_text(hub, w.trigger, w.offset_minutes),
            "actions": [action_title(hub, s.action) for s in w.steps],
            "missing": _missing_integrations(hub, w.steps, connected),
            "disabled_endpoints": disabled.get(w.id, []),
        }
        for w in items
    ]
    allowed = set(plan.allowed_actions)
    offered = [
        _template_row(hub, t, allowed)
        for t in hub.registry.templates.values()
        if all(s.action in hub.registry.actions for s in t.steps)
    ]
    # What the plan allows first; the others after, marked with the plan that includes them.
    offered.sort(key=lambda t: t["needs_plan"] is not None)
    return page(
        request,
        "workflows.html",
        me=me,
        rows=rows,
        usage=plan,
        max_steps=workflows.MAX_STEPS,
        templates=offered,
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
        # The active-workflow limit in the words the toggle shows; other refusals as they come.
        at_limit = toggle_blocked(await usage(hub, me), False) if enabled else ""
        reason = at_limit or "; ".join(f.message for f in exc.fields) or exc.message
        flash(
            request,
            f"Could not {'enable' if enabled else 'disable'} the workflow: {reason}",
            "error",
        )
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
