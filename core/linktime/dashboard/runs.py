"""The run log: runs of a workflow or of the account, a run with its steps and attempts, and
replaying a failed run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from .. import runs, workflows
from ..engine import Hub
from ..errors import InputError
from ..offload import offload
from ..runs import AttemptOut, RunOut, RunSummary, StepOut
from ..statuses import AttemptStatus, DeliveryStatus, RunStatus, StepStatus
from ..storage import new_id
from .app import (
    AnyRequest,
    Me,
    action_title,
    flash,
    page,
    see_other,
    sentence,
)
from .wording import (
    ATTEMPT_STATUS,
    RUN_STATUS,
    RUN_STATUS_CHOICE,
    STEP_STATUS,
    Problem,
    conditions_words,
    delivery_words,
    how_long,
    problem,
    trigger_words,
)


@dataclass(frozen=True)
class RunView:
    """A run as a person reads it: the summary, the trigger and status in words."""

    run: RunSummary
    trigger: str
    status: str  # "Retrying at" is followed by run.due_at
    note: str | None
    setback: Problem | None  # what went wrong at run.setback's step


def run_view(hub: Hub, run: RunSummary) -> RunView:
    at = run.setback
    # A waiting run with no step to retry is parked by a delay.
    delayed = run.status == RunStatus.WAITING and at is None
    return RunView(
        run,
        trigger_words(hub, run.trigger, run.offset_minutes),
        "Waiting until" if delayed else RUN_STATUS[run.status],
        sentence(run.note) if run.note else None,
        problem(hub, at.action, at.error_code, at.error, None) if at else None,
    )


@dataclass(frozen=True)
class AttemptView:
    attempt: AttemptOut
    status: str
    problem: Problem | None
    delivery: str | None  # "Delivered", "Undelivered: 30003 unreachable handset"


@dataclass(frozen=True)
class StepView:
    step: StepOut
    title: str
    status: str  # "Retrying at" when retry_at is set
    retry_at: datetime | None  # when a step that failed is tried again
    attempts: list[AttemptView]
    # What became of the message the step sent (its last attempt's), beside the step's status;
    # None when it sent nothing, or when the status says it already ("Opted out").
    delivery: str | None
    delivery_status: str | None
    # The path the run took here, in words: "Stopped: booking.paid eq false did not hold: it
    # was true", "Skipped: its conditions did not hold: …", "Fallback Send email sent after
    # Send SMS failed (21211)"; a waiting step's is "Waiting until" step.wait_until and
    # waiting_for ("in 3 days").
    path: str | None
    waiting_for: str | None
    held: str | None  # "Its conditions held: …", for a step whose `when` let it run


def _delivery(a: AttemptOut) -> str | None:
    return delivery_words(a.delivery_status, a.delivery_error_code, a.delivery_error)


def step_view(hub: Hub, step: StepOut) -> StepView:
    def said(a: AttemptOut) -> Problem | None:
        return problem(hub, step.action, a.error_code, a.error, a.http_status)

    last = step.attempt_log[-1] if step.attempt_log else None
    shown = last is not None and last.delivery_status not in (None, DeliveryStatus.OPTED_OUT)
    retry_at = step.next_attempt_at if step.status == StepStatus.PENDING else None
    waiting = step.wait_until if step.status == StepStatus.WAITING else None
    ran = step.status not in (StepStatus.PENDING, StepStatus.SKIPPED) and step.attempt_log
    return StepView(
        step,
        action_title(hub, step.action),
        "Retrying at" if retry_at else STEP_STATUS[step.status],
        retry_at,
        [AttemptView(a, ATTEMPT_STATUS[a.status], said(a), _delivery(a)) for a in step.attempt_log],
        _delivery(last) if last is not None and shown else None,
        last.delivery_status if last is not None and shown else None,
        _path(hub, step),
        f"in {how_long(waiting - hub.clock())}" if waiting and waiting > hub.clock() else None,
        f"Its conditions held: {conditions_words(step.when)}" if step.when and ran else None,
    )


# What became of a fallback, by its last attempt's status.
FALLBACK_DID = {
    AttemptStatus.SUCCEEDED: "sent",
    AttemptStatus.RETRYING: "is being retried",
    AttemptStatus.FAILED: "failed too",
    AttemptStatus.OPTED_OUT: "not sent (opted out)",
    AttemptStatus.BLOCKED_BY_PLAN: "not sent (not on the plan)",
}


def _path(hub: Hub, step: StepOut) -> str | None:
    """Why a step waits, stopped, was skipped, or sent its fallback (see StepView.path)."""
    if step.status in (StepStatus.STOPPED, StepStatus.SKIPPED) and step.error:
        said = "Stopped" if step.status == StepStatus.STOPPED else "Skipped"
        return f"{said}: {step.error}"
    if step.fallback is None or step.fallback.taken_after is None:
        return None
    failed = next(a for a in step.attempt_log if a.number == step.fallback.taken_after)
    code = failed.error_code or ""
    number = code.rpartition("_")[2]  # twilio_21211: the provider's number says the most
    why = f" ({number if number.isdigit() else code})" if code else ""
    taken = [a for a in step.attempt_log if a.action is not None]
    did = FALLBACK_DID.get(taken[-1].status, "tried") if taken else "is about to be sent"
    fallback, own = action_title(hub, step.fallback.action), action_title(hub, step.action)
    return f"Fallback {fallback} {did} after {own} failed{why}"


PAGE_SIZE = 50


async def _log(
    request: AnyRequest,
    hub: Hub,
    me: Me,
    cursor: str | None,
    filters: dict[str, str],
    **context: Any,
) -> Template:
    """A page of the run log, newest first, and the link to the older runs."""
    try:
        found = await offload(
            runs.list_runs, hub, me.account_id, **filters, limit=PAGE_SIZE + 1, cursor=cursor
        )
        page_error = None
    except InputError:
        found, page_error = [], "That page link is not valid: start again from the newest runs."
    more = len(found) > PAGE_SIZE
    items = found[:PAGE_SIZE]
    return page(
        request,
        "runs.html",
        me=me,
        status=422 if page_error else 200,
        runs=[run_view(hub, r) for r in items],
        statuses=RUN_STATUS_CHOICE,
        older=items[-1].id if more else None,
        paged=cursor is not None,
        page_error=page_error,
        **context,
    )


@get("/workflows/{workflow_id:str}/runs")
async def workflow_runs(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    workflow_id: FromPath[str],
    cursor: FromQuery[str | None] = None,
) -> Template:
    wf = await offload(workflows.get, hub, me.account_id, workflow_id)
    filters = {"workflow_id": workflow_id}
    return await _log(request, hub, me, cursor, filters, workflow=wf, chosen_status=None)


@get("/runs")
async def all_runs(
    request: AnyRequest,
    hub: NamedDependency[Hub],
    me: NamedDependency[Me],
    status: FromQuery[str | None] = None,
    cursor: FromQuery[str | None] = None,
) -> Template:
    chosen = status if status in frozenset(RunStatus) else None
    filters = {"status": chosen} if chosen else {}
    return await _log(request, hub, me, cursor, filters, workflow=None, chosen_status=chosen)


@get("/runs/{run_id:str}")
async def run_page(
    request: AnyRequest, hub: NamedDependency[Hub], me: NamedDependency[Me], run_id: FromPath[str]
) -> Template:
    summary = await offload(runs.get_summary, hub, me.account_id, run_id)
    run = RunOut.of(await offload(runs.get_run, hub, me.account_id, run_id))
    # The replay button's Idempotency-Key, one per rendering: a double click replays once.
    replay_key = new_id("rpl")
    return page(
        request,
        "run.html",
        me=me,
        view=run_view(hub, summary),
        run=run,
        steps=[step_view(hub, s) for s in run.steps],
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
