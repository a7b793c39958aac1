"""Every way a step can end, on both databases: PostgreSQL records each in one statement, SQLite
in a transaction of several. Runs are driven by hand (no worker) on an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from linktime.accounts import create_account
from linktime.actions import ActionContext, ActionType, Result
from linktime.engine import Hub
from linktime.models import sample_event
from linktime.runs import get_run
from linktime.storage import Run
from linktime.workflows import WorkflowIn, create
from pydantic import BaseModel

from .conftest import Clock, fast_settings, registry_with


class Script(BaseModel):
    # What each attempt returns, in order: "ok", "retry" or "fail" (the last one repeats).
    outcomes: list[str]


def scripted(ctx: ActionContext) -> Result:
    outcome = ctx.settings.outcomes[min(ctx.attempt, len(ctx.settings.outcomes)) - 1]
    return {
        "ok": Result.ok(external_id=f"{ctx.position}/{ctx.attempt}"),
        "retry": Result.retry("try again", error_code="http_503", http_status=503),
        "fail": Result.fail("no such hook", error_code="http_404", http_status=404),
    }[outcome]


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Hub, Clock]]:
    registry = registry_with(ActionType("test.scripted", "Scripted", Script, scripted))
    clock = Clock(datetime.now(UTC))
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    hub = Hub(fast_settings(data_dir=tmp_path, database_url=url), registry=registry, clock=clock)
    hub.migrate()
    yield hub, clock
    hub.close()


def run_through(hub: Hub, clock: Clock, *scripts: list[str]) -> Run:
    """Start a run of one workflow with a step per script, and drive it until it ends."""
    account = create_account(hub, "test", "business")
    steps = [{"action": "test.scripted", "settings": {"outcomes": s}} for s in scripts]
    create(
        hub, account.id, WorkflowIn(name="w", trigger="booking.created", enabled=True, steps=steps)
    )
    [run_id] = hub.emit(sample_event(), account_id=account.id).run_ids
    hub.process_run(run_id)
    for _ in range(10):  # retries come due as the clock moves on
        if get_run(hub, account.id, run_id).status in ("succeeded", "failed"):
            break
        clock.advance(seconds=1)
        for due in hub.due_runs():
            hub.process_run(due)
    return get_run(hub, account.id, run_id)


def test_a_chain_that_succeeds(hub: tuple[Hub, Clock]) -> None:
    run = run_through(*hub, ["ok"], ["retry", "ok"], ["ok"])
    assert run.status == "succeeded" and run.finished_at is not None
    assert run.lease_token is None and run.due_at is None
    assert [s.status for s in run.steps] == ["succeeded"] * 3
    assert [s.external_id for s in run.steps] == ["0/1", "1/2", "2/1"]
    assert [(a.number, a.status, a.http_status) for a in run.steps[1].attempt_log] == [
        (1, "retrying", 503),
        (2, "succeeded", None),
    ]


def test_a_permanent_failure_skips_the_rest(hub: tuple[Hub, Clock]) -> None:
    run = run_through(*hub, ["ok"], ["retry", "fail"], ["ok"], ["ok"])
    assert run.status == "failed" and run.finished_at is not None
    assert [s.status for s in run.steps] == ["succeeded", "failed", "skipped", "skipped"]
    assert [(a.number, a.status, a.error_code) for a in run.steps[1].attempt_log] == [
        (1, "retrying", "http_503"),
        (2, "failed", "http_404"),
    ]
    assert all(not s.attempt_log for s in run.steps[2:])


def test_retries_run_out(hub: tuple[Hub, Clock]) -> None:
    hub_, _ = hub
    attempts = len(hub_.settings.retry_schedule) + 1
    run = run_through(*hub, ["retry"])
    assert run.status == "failed"
    assert [a.status for a in run.steps[0].attempt_log] == ["retrying"] * (attempts - 1) + [
        "failed"
    ]
