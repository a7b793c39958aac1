"""Settings → Webhooks: every webhook endpoint of the account, its state and deliveries; and
the buttons of a webhook step (re-enable its endpoint, rotate its secret, send an example),
which the editor shows."""

from __future__ import annotations

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from .. import endpoints, workflows
from ..endpoints import Position
from ..engine import Hub
from ..errors import InputError
from ..offload import offload
from .app import AnyRequest, Me, flash, page, see_other

PAGE = "/settings/webhooks"


@get(PAGE)
async def webhooks_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me]
) -> Template:
    found = await offload(endpoints.list_detailed, hub, me.account_id)
    return page(request, "webhooks.html", me=me, endpoints=found)


def _back(request: AnyRequest, default: str) -> str:
    """Where a button's form asks to return to: one of the dashboard's own pages."""
    back = str(request.query_params.get("back") or "")
    return back if back.startswith("/") and not back.startswith("//") else default


@post(PAGE + "/{endpoint_id:str}/enable")
async def enable_endpoint(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    endpoint_id: FromPath[str],
) -> Redirect:
    endpoint = await offload(endpoints.reenable, hub, me.account_id, endpoint_id)
    flash(request, f"{endpoint.url} is enabled again: its steps are sent again.")
    return see_other(_back(request, PAGE))


@post("/workflows/{workflow_id:str}/steps/{position:int}/rotate-secret")
async def rotate_secret(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
    position: Position,
) -> Redirect:
    try:
        rotated = await offload(workflows.rotate_secret, hub, me.account_id, workflow_id, position)
    except InputError as exc:
        flash(request, exc.message, "error")
    else:
        # Shown this once (a flash is read once), like a generated secret at save.
        flash(
            request,
            f"Step {position + 1} has a new signing secret: {rotated.secret} — copy it now, it "
            "is not shown again. Deliveries carry signatures with the old and the new secret "
            f"until {rotated.previous_valid_until:%Y-%m-%d %H:%M} UTC.",
        )
    return see_other(f"/workflows/{workflow_id}")


@post("/workflows/{workflow_id:str}/steps/{position:int}/example")
async def send_example(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
    position: Position,
) -> Redirect:
    try:
        sent = await offload(endpoints.send_example, hub, me.account_id, workflow_id, position)
    except InputError as exc:
        flash(request, exc.message, "error")
        return see_other(f"/workflows/{workflow_id}")
    flash(request, f"An example of step {position + 1} is on its way, marked as a test.")
    return see_other(f"/runs/{sent.run_id}")


HANDLERS = [webhooks_page, enable_endpoint, rotate_secret, send_example]
