"""The health of the endpoints actions deliver to (``ActionType.endpoint``: a webhook's URL),
kept the way Svix keeps it: an endpoint that answers ``410 Gone`` is disabled at once, one that
failed every attempt for ``DISABLE_AFTER`` is disabled, and a disabled endpoint's steps fail
with ``endpoint_disabled``, unsent, until the account re-enables it. Test sends are not held
back by it."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from litestar.params import Parameter
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, case, func, select, update

from .actions import Outcome, Result
from .errors import FieldError, InputError, NotFound
from .matching import StepSpec
from .models import EVENT_TYPES, sample_event
from .statuses import AttemptStatus
from .storage import (
    Attempt,
    Endpoint,
    Run,
    RunStep,
    Workflow,
    WorkflowStep,
    insert_ignoring,
    new_id,
)

if TYPE_CHECKING:
    from .engine import Hub

# A step's position in a route: bounded, so a huge number is a 400, not a database error.
Position = Annotated[int, Parameter(ge=0, le=1000, description="The step's position, from 0")]

ACTIVE = "active"
DISABLED = "disabled"
DISABLE_AFTER = timedelta(days=5)
DISABLED_CODE = "endpoint_disabled"
# How long a rotated-out signing secret keeps signing beside the new one (as Svix).
ROTATION_WINDOW = timedelta(hours=24)
# The window of an endpoint's success rate, and how many recent deliveries its page lists.
RATE_WINDOW = timedelta(hours=24)
RECENT = 20


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


@dataclass(frozen=True)
class Health:
    id: str
    url: str
    state: str
    disabled_reason: str | None
    failing_since: datetime | None
    # (account, action, URL digest): where ``Healths`` keeps it.
    key: tuple[str, str, str] = ("", "", "")

    def refusal(self) -> Result | None:
        """The result of a step to this endpoint while it is disabled, or None."""
        if self.state != DISABLED:
            return None
        return Result.fail(
            f"the endpoint {self.url} is disabled ({self.disabled_reason}): re-enable it in "
            "Settings → Webhooks once it works again",
            error_code=DISABLED_CODE,
        )


_COLUMNS = (
    Endpoint.id,
    Endpoint.url,
    Endpoint.state,
    Endpoint.disabled_reason,
    Endpoint.failing_since,
)


# How long a process trusts what it read of an endpoint's health: a change made by another
# process (a re-enable, its 410) reaches it within this; its own changes at once. Without it
# every delivery would cost a transaction of its own (measured: 0.44 → 0.30 in bench/).
CACHE_SECONDS = 2.0
_CACHE_MAX = 10_000


class Healths:
    """The endpoints' health as this process last read or changed it (one per Hub)."""

    def __init__(self, seconds: float = CACHE_SECONDS) -> None:
        self.seconds = seconds
        self._seen: dict[tuple[str, str, str], tuple[float, Health]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> Health | None:
        with self._lock:
            found = self._seen.get(key)
        if found is None or time.monotonic() - found[0] > self.seconds:
            return None
        return found[1]

    def put(self, health: Health) -> None:
        with self._lock:
            if len(self._seen) >= _CACHE_MAX:  # bounded: many endpoints, each read again
                self._seen.clear()
            self._seen[health.key] = (time.monotonic(), health)

    def forget(self, endpoint_id: str) -> None:
        with self._lock:
            for key in [k for k, (_, h) in self._seen.items() if h.id == endpoint_id]:
                del self._seen[key]


def _find(conn: Connection, account_id: str, action: str, digest: str) -> Health | None:
    row = conn.execute(
        select(*_COLUMNS).where(
            Endpoint.account_id == account_id,
            Endpoint.action == action,
            Endpoint.url_hash == digest,
        )
    ).first()
    return None if row is None else Health(*row, key=(account_id, action, digest))


def ensure(
    db: Engine, healths: Healths, account_id: str, action: str, url: str, now: datetime
) -> Health:
    """The endpoint ``url`` of ``action`` for the account, known from its first delivery on."""
    digest = url_hash(url)
    cached = healths.get((account_id, action, digest))
    if cached is not None:
        return cached
    with db.connect() as conn:
        found = _find(conn, account_id, action, digest)
    if found is not None:
        healths.put(found)
        return found
    with db.begin() as conn:
        insert_ignoring(
            conn,
            Endpoint,
            {
                "id": new_id("ep"),
                "account_id": account_id,
                "action": action,
                "url": url,
                "url_hash": digest,
                "state": ACTIVE,
                "disabled_reason": None,
                "disabled_at": None,
                "failing_since": None,
                "created_at": now,
                "updated_at": now,
            },
        )
        found = _find(conn, account_id, action, digest)
    assert found is not None
    healths.put(found)
    return found


def observe(db: Engine, healths: Healths, endpoint: Health, result: Result, now: datetime) -> None:
    """Keep the endpoint's health after an attempt to it; writes only what changes."""
    if result.error_code == DISABLED_CODE:
        return
    after = endpoint
    if result.outcome is Outcome.SUCCEEDED:
        after = replace(endpoint, failing_since=None)
    elif result.http_status == 410:
        after = replace(endpoint, state=DISABLED, disabled_reason="it answered 410 Gone")
    elif endpoint.failing_since is None:
        after = replace(endpoint, failing_since=now)
    elif now - endpoint.failing_since >= DISABLE_AFTER:
        reason = f"every delivery failed for {DISABLE_AFTER.days} days"
        after = replace(endpoint, state=DISABLED, disabled_reason=reason)
    # Only the columns that change: what this process read may be a moment old.
    values: dict[str, object] = {
        name: getattr(after, name)
        for name in ("state", "disabled_reason", "failing_since")
        if getattr(after, name) != getattr(endpoint, name)
    }
    if not values:
        return
    if after.state == DISABLED:
        values["disabled_at"] = now
    with db.begin() as conn:
        query = update(Endpoint).where(Endpoint.id == endpoint.id)
        if endpoint.failing_since is None and after.failing_since is not None:
            query = query.where(Endpoint.failing_since.is_(None))  # the first failure only
        conn.execute(query.values(**values, updated_at=now))
    healths.put(after)


def enable(conn: Connection, account_id: str, endpoint_id: str, now: datetime) -> bool:
    """Re-enable a disabled endpoint: its steps are sent again. Whether it is the account's."""
    changed = conn.execute(
        update(Endpoint)
        .where(Endpoint.id == endpoint_id, Endpoint.account_id == account_id)
        .values(
            state=ACTIVE, disabled_reason=None, disabled_at=None, failing_since=None, updated_at=now
        )
    )
    return changed.rowcount == 1


# --- read models (GET /v1/endpoints, Settings → Webhooks) --------------------------------------


class StepUse(BaseModel):
    """A workflow step that delivers to an endpoint."""

    workflow_id: str
    workflow_name: str
    position: int = Field(description="The step's position in its workflow, from 0")
    enabled: bool = Field(description="Whether the workflow is enabled")


class DeliveryOut(BaseModel):
    """One attempt to deliver to an endpoint."""

    at: datetime = Field(description="When the attempt started")
    status: str = Field(description="The attempt's status: succeeded, retrying, failed…")
    http_status: int | None = Field(description="The endpoint's HTTP answer; null if none")
    error_code: str | None
    error: str | None
    run_id: str
    test: bool = Field(description="Whether the run was a test (Send example, Test panel)")


class EndpointOut(BaseModel):
    id: str
    url: str
    action: str
    state: str = Field(description="active, or disabled (no step is sent until re-enabled)")
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None = Field(
        description="Since when every delivery failed; disabled after 5 days of it"
    )
    success_rate: float | None = Field(
        description="Share of the deliveries in the last 24 hours that succeeded (0 to 1); "
        "null when there were none"
    )
    deliveries_24h: int = Field(description="Deliveries made in the last 24 hours")
    used_by: list[StepUse] = Field(description="The workflow steps that deliver here")


class EndpointDetail(EndpointOut):
    deliveries: list[DeliveryOut] = Field(description=f"The {RECENT} latest, newest first")


def _uses(hub: Hub, conn: Connection, account_id: str) -> dict[tuple[str, str], list[StepUse]]:
    """Steps of the account's workflows by (action, endpoint), the endpoint as the engine
    finds it: the action's own ``endpoint`` of the step's settings."""
    rows = conn.execute(
        select(
            WorkflowStep.action,
            WorkflowStep.settings,
            Workflow.id,
            Workflow.name,
            WorkflowStep.position,
            Workflow.enabled,
        )
        .join(Workflow, Workflow.id == WorkflowStep.workflow_id)
        .where(Workflow.account_id == account_id)
        .order_by(Workflow.created_at, WorkflowStep.position)
    )
    uses: dict[tuple[str, str], list[StepUse]] = {}
    for action_name, settings, wf_id, wf_name, position, enabled in rows:
        action = hub.registry.actions.get(action_name)
        if action is None or action.endpoint is None:
            continue
        try:
            url = action.endpoint(hub.sealer.open(action.settings, settings))
        except ValueError:  # no longer valid: the engine reports it when the step runs
            continue
        if url:
            uses.setdefault((action_name, url), []).append(
                StepUse(
                    workflow_id=wf_id, workflow_name=wf_name, position=position, enabled=enabled
                )
            )
    return uses


def _rates(conn: Connection, ids: list[str], since: datetime) -> dict[str, tuple[int, int]]:
    """(deliveries, succeeded) per endpoint since ``since``; refusals of a disabled endpoint
    sent nothing and do not count."""
    if not ids:
        return {}
    ok = func.sum(case((Attempt.status == AttemptStatus.SUCCEEDED, 1), else_=0))
    rows = conn.execute(
        select(Attempt.endpoint_id, func.count(), ok)
        .where(
            Attempt.endpoint_id.in_(ids),
            Attempt.started_at >= since,
            (Attempt.error_code.is_(None)) | (Attempt.error_code != DISABLED_CODE),
        )
        .group_by(Attempt.endpoint_id)
    )
    return {row[0]: (int(row[1]), int(row[2] or 0)) for row in rows}


def _deliveries(conn: Connection, account_id: str, endpoint_id: str) -> list[DeliveryOut]:
    """The endpoint's ``RECENT`` latest attempts, newest first."""
    rows = conn.execute(
        select(
            Attempt.started_at,
            Attempt.status,
            Attempt.http_status,
            Attempt.error_code,
            Attempt.error,
            RunStep.run_id,
            Run.test,
        )
        .join(RunStep, RunStep.id == Attempt.step_id)
        .join(Run, Run.id == RunStep.run_id)
        .where(Attempt.endpoint_id == endpoint_id, Run.account_id == account_id)
        .order_by(Attempt.started_at.desc(), Attempt.id.desc())
        .limit(RECENT)
    )
    return [
        DeliveryOut(
            at=at,
            status=status,
            http_status=http_status,
            error_code=error_code,
            error=error,
            run_id=run_id,
            test=test,
        )
        for at, status, http_status, error_code, error, run_id, test in rows
    ]


def _out(row: Any, rate: tuple[int, int], uses: list[StepUse]) -> EndpointOut:
    total, ok = rate
    return EndpointOut(
        id=row.id,
        url=row.url,
        action=row.action,
        state=row.state,
        disabled_reason=row.disabled_reason,
        disabled_at=row.disabled_at,
        failing_since=row.failing_since,
        success_rate=round(ok / total, 4) if total else None,
        deliveries_24h=total,
        used_by=uses,
    )


def _rows(conn: Connection, account_id: str, endpoint_id: str | None = None) -> list[Any]:
    query = select(Endpoint.__table__).where(Endpoint.account_id == account_id)
    if endpoint_id is not None:
        query = query.where(Endpoint.id == endpoint_id)
    return list(conn.execute(query.order_by(Endpoint.created_at.desc(), Endpoint.id)))


def _endpoints(
    hub: Hub, account_id: str, endpoint_id: str | None, detailed: bool
) -> list[EndpointDetail]:
    """The account's endpoints (or the one ``endpoint_id``), their 24-hour rates and the steps
    using them read once for all, and with ``detailed`` their latest deliveries."""
    with hub.db.connect() as conn:
        rows = _rows(conn, account_id, endpoint_id)
        rates = _rates(conn, [r.id for r in rows], hub.clock() - RATE_WINDOW)
        uses = _uses(hub, conn, account_id) if rows else {}
        return [
            EndpointDetail(
                **_out(r, rates.get(r.id, (0, 0)), uses.get((r.action, r.url), [])).model_dump(),
                deliveries=_deliveries(conn, account_id, r.id) if detailed else [],
            )
            for r in rows
        ]


def list_endpoints(hub: Hub, account_id: str) -> list[EndpointOut]:
    """Every endpoint of the account (each known from its first delivery), newest first."""
    return [
        EndpointOut(**e.model_dump(exclude={"deliveries"}))
        for e in _endpoints(hub, account_id, None, detailed=False)
    ]


def list_detailed(hub: Hub, account_id: str) -> list[EndpointDetail]:
    """Every endpoint of the account with its latest deliveries (Settings → Webhooks)."""
    return _endpoints(hub, account_id, None, detailed=True)


def get_endpoint(hub: Hub, account_id: str, endpoint_id: str) -> EndpointDetail:
    """One endpoint of the account with its latest deliveries; another account's is NotFound."""
    found = _endpoints(hub, account_id, endpoint_id, detailed=True)
    if not found:
        raise NotFound(f"no endpoint {endpoint_id!r}")
    return found[0]


def disabled_by_workflow(hub: Hub, account_id: str) -> dict[str, list[tuple[int, Any]]]:
    """The account's disabled endpoints by the workflows whose steps deliver to them: for each
    workflow id, (step position, endpoint row) pairs. The workflows list and the editor mark
    them."""
    with hub.db.connect() as conn:
        disabled = [r for r in _rows(conn, account_id) if r.state == DISABLED]
        uses = _uses(hub, conn, account_id) if disabled else {}
    marked: dict[str, list[tuple[int, Any]]] = {}
    for row in disabled:
        for use in uses.get((row.action, row.url), []):
            marked.setdefault(use.workflow_id, []).append((use.position, row))
    return marked


def reenable(hub: Hub, account_id: str, endpoint_id: str) -> EndpointDetail:
    """Re-enable one of the account's endpoints: its steps are sent again."""
    with hub.db.begin() as conn:
        if not enable(conn, account_id, endpoint_id, hub.clock()):
            raise NotFound(f"no endpoint {endpoint_id!r}")
    hub.endpoint_health.forget(endpoint_id)
    return get_endpoint(hub, account_id, endpoint_id)


# --- Send example --------------------------------------------------------------------------------


class ExampleSent(BaseModel):
    run_id: str = Field(description="The test run that delivers it: see GET /v1/runs/{id}")
    event_id: str = Field(description="The example event's id, test_…: the body says so too")


def send_example(hub: Hub, account_id: str, workflow_id: str, position: int) -> ExampleSent:
    """A signed example delivery of the sample booking to the endpoint of one step, as a test
    run of that step alone (the run log shows it as a test; its event id starts ``test_``)."""
    with hub.db.connect() as conn:
        found = conn.execute(
            select(Workflow.name, Workflow.trigger, WorkflowStep.action, WorkflowStep.settings)
            .join(WorkflowStep, WorkflowStep.workflow_id == Workflow.id)
            .where(
                Workflow.id == workflow_id,
                Workflow.account_id == account_id,
                WorkflowStep.position == position,
            )
        ).first()
    if found is None:
        raise NotFound(f"no workflow {workflow_id!r} with a step at position {position}")
    name, trigger, action_name, settings = found
    action = hub.registry.actions.get(action_name)
    if action is None or action.endpoint is None:
        message = f"a {action_name} step has no endpoint to send an example to"
        raise InputError(message, [FieldError("position", message)], 409, "no_endpoint")
    event_id = f"test_{new_id('example')}"
    event = sample_event(trigger if trigger in EVENT_TYPES else "booking.created", id=event_id)
    run_id = hub.start_test_run(
        account_id, workflow_id, name, trigger, event, steps=[StepSpec(action_name, settings)]
    )
    return ExampleSent(run_id=run_id, event_id=event_id)
