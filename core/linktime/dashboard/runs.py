"""The run log: runs of a workflow or of the account, a run with its steps and attempts, and
replaying a failed run."""

from __future__ import annotations

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from .. import runs, workflows
from ..engine import Hub
from ..errors import InputError
from ..offload import offload
from ..runs import RunOut
from ..statuses import RunStatus
from ..storage import new_id
from . import services
from .app import (
    AnyRequest,
    Me,
    action_title,
    flash,
    page,
    see_other,
)


@get("/workflows/{workflow_id:str}/runs")
async def workflow_runs(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
) -> Template:
    wf = await offload(workflows.get, hub, me.account_id, workflow_id)
    items = await offload(runs.list_runs, hub, me.account_id, workflow_id=workflow_id)
    return page(
        request,
        "runs.html",
        me=me,
        workflow=wf,
        runs=items,
        chosen_status=None,
        statuses=list(RunStatus),
    )


@get("/runs")
async def all_runs(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    status: FromQuery[str | None] = None,
) -> Template:
    chosen = status if status in frozenset(RunStatus) else None
    items = await offload(runs.list_runs, hub, me.account_id, status=chosen)
    return page(
        request,
        "runs.html",
        me=me,
        workflow=None,
        runs=items,
        chosen_status=chosen,
        statuses=list(RunStatus),
    )


@get("/runs/{run_id:str}")
async def run_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], run_id: FromPath[str]
) -> Template:
    run = RunOut.of(await offload(runs.get_run, hub, me.account_id, run_id))
    event_id = await offload(services.event_of_run, hub, me.account_id, run_id)
    steps = [{"title": action_title(hub, s.action), **s.model_dump()} for s in run.steps]
    # The replay button's Idempotency-Key, one per rendering: a double click replays once.
    replay_key = new_id("rpl")
    return page(
        request,
        "run.html",
        me=me,
        run=run,
        steps=steps,
        event_id=event_id,
        replay_key=replay_key,
    )


@post("/runs/{run_id:str}/replay")
async def replay_run(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], run_id: FromPath[str]
) -> Redirect:
    key = str((await request.form()).get("idempotency_key", "")).strip()[:200] or None
    try:
        made = await offload(runs.replay, hub, me.account_id, run_id, key)
    except InputError as exc:
        flash(request, f"Not replayed: {exc.message}", "error")
        return see_other(f"/runs/{run_id}")
    if made.repeated:
        flash(request, f"Already replayed from the failed step as {made.run_id}.")
    else:
        flash(request, f"Replaying from the failed step as {made.run_id}.")
    return see_other(f"/runs/{made.run_id}")


HANDLERS = [workflow_runs, all_runs, run_page, replay_run]
