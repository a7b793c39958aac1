"""LINKTIME_LOG_FORMAT=json: one JSON object per line, with the ids of the run and step being
processed, on the lines of the engine and of the plugins (sync and async) alike; and the real
``linktime`` processes (API, two worker processes, scheduler) log only JSON while
LINKTIME_METRICS_DIR makes ``serve``'s /metrics count what the other processes did."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from linktime import Result, logs, workflows
from linktime.accounts import create_account
from linktime.actions import ActionContext, ActionType
from linktime.engine import Hub
from linktime.models import sample_event
from linktime.runs import get_run
from linktime.testing import HttpReceiver, Reply
from sqlalchemy import create_engine, text

from .conftest import NoSettings, delete_namespace, fast_settings, registry_with
from .procs import LINKTIME, serve_with_account, services_env, start, stop
from .test_crash import chain, wait_run
from .test_metrics import ATTEMPTS, EVENTS, moved, parse

plugin_log = logging.getLogger("acme.plugin")


def announce(ctx: ActionContext) -> Result:
    plugin_log.info("sync step of %s", ctx.workflow.name)
    return Result.fail("the receiver said no", error_code="refused")


async def greet(ctx: ActionContext) -> Result:
    plugin_log.info("async step")
    return Result.ok()


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the root logger writes, formatted as LINKTIME_LOG_FORMAT=json formats it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter("json"))
    handler.addFilter(logs.RunIds())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def test_engine_and_plugin_lines_carry_the_run_and_step_ids(
    tmp_path: Path, json_lines: io.StringIO
) -> None:
    registry = registry_with(
        ActionType("test.greet", "Greet", NoSettings, greet),
        ActionType("test.announce", "Announce", NoSettings, announce),
    )
    hub = Hub(fast_settings(data_dir=tmp_path), registry=registry)
    hub.migrate()
    try:
        account = create_account(hub, "logs", "business")
        spec = workflows.WorkflowIn(
            name="welcome",
            trigger="booking.created",
            enabled=True,
            steps=[{"action": "test.greet"}, {"action": "test.announce"}],
        )
        workflows.create(hub, account.id, spec)
        run_id = hub.emit(sample_event(id="evt_logs"), account_id=account.id).run_ids[0]
        hub.process_run(run_id)
        plugin_log.info("after the run")
        run = get_run(hub, account.id, run_id)
    finally:
        hub.close()
    assert run.status == "failed"
    first, second = (s.id for s in run.steps)

    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    ours = [line for line in lines if line["logger"] in ("acme.plugin", "linktime.engine")]
    run_ids = {"run_id": run_id, "account_id": account.id, "event_id": "evt_logs"}
    said = [(line["message"], {k: line.get(k) for k in (*run_ids, "step_id")}) for line in ours]
    assert said == [
        ("async step", {**run_ids, "step_id": first}),
        ("sync step of welcome", {**run_ids, "step_id": second}),
        (
            f"run {run_id} step {second} account {account.id}: attempt 1 ended refused "
            "(http -); run failed",
            {**run_ids, "step_id": second},
        ),
        ("after the run", dict.fromkeys((*run_ids, "step_id"))),
    ]
    for line in ours:
        assert line["level"] == "INFO"
        assert line["time"].endswith("+00:00")


def json_only(log: Path) -> list[dict[str, Any]]:
    """Every line of a process's output, each a JSON object, or the test fails naming it."""
    lines = log.read_text().splitlines()
    assert lines, f"{log.name} is empty"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{log.name}: not a JSON line: {line!r}")
    return parsed


def test_real_processes_log_json_and_serve_counts_the_workers_and_the_scheduler(
    tmp_path: Path, pg_url: str, redis_url: str, http_receiver: HttpReceiver
) -> None:
    namespace = f"lt-logs-{uuid.uuid4().hex[:8]}"
    env = services_env(
        pg_url,
        redis_url,
        namespace,
        LINKTIME_SECRET_KEY="logs-test",
        LINKTIME_LOG_FORMAT="json",
        LINKTIME_METRICS_DIR=str(tmp_path / "metrics"),
    )
    http_receiver.script("/s1", Reply(status=400, body="no"))  # the second step fails
    subprocess.run([LINKTIME, "db", "upgrade"], env=env, cwd=tmp_path, check=True)
    served = serve_with_account(env, tmp_path, "--plan", "business")
    scheduler_log, worker_log = tmp_path / "scheduler.log", tmp_path / "worker.log"
    scheduler = start(["scheduler"], env, tmp_path, scheduler_log)
    worker = start(["worker", "--processes", "2", "--threads", "2"], env, tmp_path, worker_log)
    headers = {"Authorization": f"Bearer {served.key}"}
    try:
        steps = chain(http_receiver.url)[:2]
        created = httpx.post(
            f"{served.base}/v1/workflows",
            headers=headers,
            json={"name": "two", "trigger": "booking.created", "enabled": True, "steps": steps},
        )
        assert created.status_code == 201, created.text
        before = parse(httpx.get(f"{served.base}/metrics").text)
        event = sample_event(id="evt_procs").model_dump(mode="json")
        accepted = httpx.post(f"{served.base}/v1/events", headers=headers, json=event)
        run = wait_run(served.base, headers, accepted.json()["runs"][0]["id"])
        assert run["status"] == "failed"
        after = parse(httpx.get(f"{served.base}/metrics").text)
        # Stopped as a process manager stops it: SIGTERM to its main process alone.
        os.kill(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    finally:
        stop([scheduler, worker, served.proc])
        delete_namespace(redis_url, namespace)

    webhook = {"action": "webhook.call"}
    # Counted by serve itself:
    assert moved(before, after, EVENTS, type="booking.created", outcome="accepted") == 1
    # ... by the worker processes, added up from the shared directory:
    assert moved(before, after, ATTEMPTS, **webhook, outcome="succeeded") == 1
    assert moved(before, after, ATTEMPTS, **webhook, outcome="failed") == 1
    assert moved(before, after, "linktime_step_attempt_duration_seconds_count", **webhook) == 2
    assert moved(before, after, "linktime_runs_started_total", trigger="booking.created") == 1
    assert moved(before, after, "linktime_runs_finished_total", status="failed") == 1
    # ... and by the scheduler process.
    assert moved(before, after, "linktime_scheduler_tick_duration_seconds_count") > 0
    assert ("linktime_broker_queue_messages", frozenset()) in after
    assert after[("linktime_step_attempts_in_progress", frozenset(webhook.items()))] == 0
    # The worker processes, stopped cleanly, took their in-progress gauges with them; their
    # counters stay.
    metrics_dir = tmp_path / "metrics"
    assert list(metrics_dir.glob("gauge_livesum_*.db")) == []
    assert list(metrics_dir.glob("counter_*.db"))

    db = create_engine(pg_url)
    with db.connect() as conn:
        owner = conn.scalar(text("SELECT account_id FROM runs WHERE id = :id"), {"id": run["id"]})
        failing = conn.scalar(
            text("SELECT id FROM run_steps WHERE run_id = :id AND position = 1"), {"id": run["id"]}
        )
    db.dispose()
    for log in (scheduler_log, worker_log):
        json_only(log)
    # serve's own lines too: uvicorn's, and its start lines, as one record.
    started = json_only(served.log)[0]
    assert started["logger"] == "linktime.serve"
    assert started["message"].startswith("LinkTime Workflows\n  dashboard:")
    said = [line for line in json_only(worker_log) if "run failed" in line["message"]]
    assert len(said) == 1
    assert said[0]["logger"] == "linktime.engine"
    assert {k: said[0][k] for k in ("run_id", "step_id", "event_id")} == {
        "run_id": run["id"],
        "step_id": failing,
        "event_id": "evt_procs",
    }
    assert said[0]["account_id"] == owner
    assert any(line["message"] == "scheduler running" for line in json_only(scheduler_log))
