"""GET /metrics as a Prometheus user reads it: a scrape before and after one chain moves the
counters by exactly what that chain did; reminders report their lateness; the Grafana
dashboard names only metrics a real scrape has; a worker and a scheduler without `serve` serve
their own (LINKTIME_METRICS_PORT; LINKTIME_METRICS_DIR is in test_json_logs). Scrapes are parsed
with prometheus_client's own text parser."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from linktime import bookings, metrics, workflows
from linktime.accounts import create_account
from linktime.api import create_app
from linktime.engine import Hub
from linktime.models import sample_event
from linktime.settings import Settings
from linktime.storage import Run
from linktime.testing import HttpReceiver
from linktime.worker import bind, make_broker
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from .conftest import Clock, System, delete_namespace, fast_settings
from .procs import LINKTIME, clean_env, free_port, services_env, start, stop, wait_http
from .test_crash import STEPS, chain
from .test_reminders import event, remind

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "linktime.json"

EVENTS = "linktime_events_received_total"
ATTEMPTS = "linktime_step_attempts_total"
SUCCEEDED = {"action": "webhook.call", "outcome": "succeeded"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(client: TestClient[Any]) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_scrape_after_one_chain_shows_exactly_that_chain(
    running_api: tuple[System, TestClient[Any]], http_receiver: HttpReceiver
) -> None:
    system, client = running_api
    account = system.account()
    headers = {"Authorization": f"Bearer {account.api_key}"}
    system.workflow(account, chain(http_receiver.url))
    body = sample_event(id="evt_metrics").model_dump(mode="json")

    before = scrape(client)
    answer = client.post("/v1/events", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    run = system.wait_run(account, answer.json()["runs"][0]["id"])
    assert run.status == "succeeded"
    # The same event again, the same id with another body, an unknown type, no key at all.
    assert client.post("/v1/events", json=body, headers=headers).status_code == 202
    changed = {**body, "booking": {**body["booking"], "title": "changed"}}
    assert client.post("/v1/events", json=changed, headers=headers).status_code == 409
    bogus = {**body, "id": "evt_bogus", "type": "booking.exploded"}
    assert client.post("/v1/events", json=bogus, headers=headers).status_code == 422
    assert client.post("/v1/events", json=body).status_code == 401
    after = scrape(client)

    for outcome in ("accepted", "replayed", "rejected"):
        assert moved(before, after, EVENTS, type="booking.created", outcome=outcome) == 1
    assert moved(before, after, EVENTS, type="unknown", outcome="rejected") == 1
    assert moved(before, after, "linktime_runs_started_total", trigger="booking.created") == 1
    assert moved(before, after, "linktime_runs_finished_total", status="succeeded") == 1
    assert moved(before, after, "linktime_runs_finished_total", status="failed") == 0
    webhook = {"action": "webhook.call"}
    assert moved(before, after, ATTEMPTS, **SUCCEEDED) == STEPS
    assert moved(before, after, ATTEMPTS, **webhook, outcome="retrying") == 0
    assert moved(before, after, "linktime_step_attempt_duration_seconds_count", **webhook) == STEPS
    durations = moved(before, after, "linktime_step_attempt_duration_seconds_sum", **webhook)
    assert 0 < durations < 10
    assert moved(before, after, "linktime_event_to_first_step_seconds_count") == 1
    assert moved(before, after, "linktime_reminder_lateness_seconds_count") == 0
    assert after[("linktime_step_attempts_in_progress", frozenset(webhook.items()))] == 0
    # The scheduler kept ticking meanwhile; the scrape-time gauges are there, and nothing waits.
    assert moved(before, after, "linktime_scheduler_tick_duration_seconds_count") > 0
    assert after[("linktime_runs_due", frozenset())] == 0
    assert ("linktime_broker_queue_messages", frozenset()) in after


def test_a_reminder_reports_how_late_it_fired_and_a_cancelled_one_ends_cancelled(
    make_system: Callable[..., System], allow_loopback: None, http_receiver: HttpReceiver
) -> None:
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    clock = Clock(t0)
    system = make_system(clock=clock)
    system.start()
    account = system.account()
    remind(system, account, http_receiver.url + "/remind")  # an hour before the meeting
    start = t0 + timedelta(hours=2)
    system.hub.emit(event("booking.created", 1, start), account_id=account.id)
    system.hub.emit(event("booking.created", 2, start, uid="bk_2"), account_id=account.id)
    before = parse(metrics.exposition(system.hub)[0].decode())
    assert before[("linktime_runs_due", frozenset())] == 0  # planned, not yet due

    system.hub.emit(event("booking.cancelled", 3, start, uid="bk_2"), account_id=account.id)
    clock.advance(hours=1, seconds=30)  # the reminder of bk_1 is 30 s overdue
    system.settle()
    http_receiver.wait_for(1)
    after = parse(metrics.exposition(system.hub)[0].decode())

    assert moved(before, after, "linktime_reminder_lateness_seconds_count") == 1
    assert moved(before, after, "linktime_reminder_lateness_seconds_sum") == 30
    assert moved(before, after, "linktime_event_to_first_step_seconds_count") == 0
    assert moved(before, after, "linktime_runs_started_total", trigger="meeting.before") == 1
    assert moved(before, after, "linktime_runs_finished_total", status="succeeded") == 1
    assert moved(before, after, "linktime_runs_finished_total", status="cancelled") == 1


def test_a_cancel_counts_once_its_transaction_commits_never_when_it_rolls_back(
    make_system: Callable[..., System],
) -> None:
    """A transaction that rolls back (say its connection dropped; the caller tries again)
    cancelled nothing: only the try that commits counts."""
    system = make_system()
    account = system.account()
    remind(system, account, "https://hooks.example.com/remind")
    start = datetime.now(UTC) + timedelta(days=30)
    system.hub.emit(event("booking.created", 1, start), account_id=account.id)
    planned = Run.account_id == account.id

    def cancelled() -> float:
        scraped = parse(metrics.exposition(system.hub)[0].decode())
        return value(scraped, "linktime_runs_finished_total", status="cancelled")

    before = cancelled()
    with pytest.raises(ConnectionAbortedError), system.hub.db.begin() as conn:
        bookings.cancel(conn, planned, "cancelled by the test", system.hub.clock())
        raise ConnectionAbortedError  # the transaction fails after the cancel
    assert cancelled() == before
    with system.hub.db.begin() as conn:
        bookings.cancel(conn, planned, "cancelled by the test", system.hub.clock())
    assert cancelled() == before + 1


def test_metrics_take_the_admin_token_when_one_is_set_and_stay_out_of_the_schema(
    tmp_path: Path,
) -> None:
    hub = Hub(Settings(data_dir=tmp_path, admin_token=SecretStr("operator-token")))
    hub.migrate()
    try:
        with TestClient(create_app(hub)) as client:
            refused = client.get("/metrics")
            assert refused.status_code == 401
            assert refused.json()["error"] == "unauthorized"
            wrong = client.get("/metrics", headers={"Authorization": "Bearer lt_account_key"})
            assert wrong.status_code == 401
            ok = client.get("/metrics", headers={"Authorization": "Bearer operator-token"})
            assert ok.status_code == 200
            assert "linktime_events_received" in {
                f.name for f in text_string_to_metric_families(ok.text)
            }
            assert "/metrics" not in client.get("/schema/openapi.json").json()["paths"]
    finally:
        hub.close()


def test_a_scrape_without_the_database_still_answers_with_the_counters(tmp_path: Path) -> None:
    """The scrape-time gauges need the database; when it does not answer they are left out
    (and logged), the rest is served: never a 500 that would hide every other metric."""
    nowhere = "postgresql+psycopg://linktime@127.0.0.1:1/linktime?connect_timeout=2"
    hub = Hub(Settings(data_dir=tmp_path, database_url=nowhere))
    try:
        with TestClient(create_app(hub)) as client:
            scraped = scrape(client)
    finally:
        hub.close()
    names = {name for name, _ in scraped}
    assert "linktime_runs_due" not in names
    assert "process_cpu_seconds_total" in names


def dashboard_metric_names() -> set[str]:
    """Every linktime_* series the dashboard's panels query."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    return {name for expr in exprs for name in re.findall(r"\blinktime_[a-z_]+", expr)}


def test_every_metric_the_grafana_dashboard_queries_is_in_a_real_scrape(tmp_path: Path) -> None:
    hub = Hub(Settings(data_dir=tmp_path))
    hub.migrate()
    bind(hub, make_broker(hub))  # the in-process broker: its queue is measured
    try:
        with TestClient(create_app(hub)) as client:
            text = client.get("/metrics").text
    finally:
        hub.close()
    # The series a family exposes: counters end in _total, histograms in _bucket/_count/_sum.
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    exposed = {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in suffixes.get(family.type, [""])
    }
    named = dashboard_metric_names()
    assert named, "the dashboard queries no linktime metric"
    assert named <= exposed, f"not in a scrape: {sorted(named - exposed)}"
    # And the other way: every metric LinkTime exposes has a panel.
    family = re.compile(r"_(total|bucket|count|sum|created)$")
    ours = {family.sub("", name) for name in exposed if name.startswith("linktime_")}
    shown = {family.sub("", name) for name in named}
    assert ours <= shown, f"no panel for: {sorted(ours - shown)}"


def test_a_worker_and_a_scheduler_without_serve_each_serve_their_own_metrics_port(
    tmp_path: Path, pg_url: str, redis_url: str, http_receiver: HttpReceiver
) -> None:
    """LINKTIME_METRICS_PORT, no LINKTIME_METRICS_DIR: `linktime worker` adds up its two
    processes on its port, `linktime scheduler` counts its ticks on its own. The port takes no
    token: by default it listens on loopback only, LINKTIME_METRICS_HOST opens it."""
    namespace = f"lt-port-{uuid.uuid4().hex[:8]}"
    env = services_env(pg_url, redis_url, namespace, LINKTIME_SECRET_KEY="port-test")
    hub = Hub(fast_settings(data_dir=tmp_path, database_url=pg_url, secret_key="port-test"))
    hub.migrate()
    account = create_account(hub, "ports", "business")
    steps = chain(http_receiver.url)
    spec = workflows.WorkflowIn(name="chain", trigger="booking.created", enabled=True, steps=steps)
    workflows.create(hub, account.id, spec)
    worker_port, scheduler_port = free_port(), free_port()
    log = tmp_path / "procs.log"
    temp = tmp_path / "temp"  # where the worker's own metrics directory goes, and then leaves
    temp.mkdir()
    worker = start(
        ["worker", "--processes", "2", "--threads", "2"],
        {**env, "LINKTIME_METRICS_PORT": str(worker_port), "TMPDIR": str(temp)},
        tmp_path,
        log,
    )
    scheduler = start(
        ["scheduler"],
        {**env, "LINKTIME_METRICS_PORT": str(scheduler_port), "LINKTIME_METRICS_HOST": "0.0.0.0"},
        tmp_path,
        log,
    )
    try:
        wait_http(f"http://127.0.0.1:{worker_port}/metrics")
        wait_http(f"http://127.0.0.1:{scheduler_port}/metrics")
        # 127.0.0.2 is this machine too, but not the address 127.0.0.1 listens on.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.2:{worker_port}/metrics")
        assert httpx.get(f"http://127.0.0.2:{scheduler_port}/metrics").status_code == 200
        # This hub has no broker: the scheduler hands the runs out.
        for i in range(2):
            hub.emit(sample_event(id=f"evt_port_{i}"), account_id=account.id)
        http_receiver.wait_for(2 * STEPS, timeout=30)
        deadline = time.monotonic() + 10
        while True:  # the last attempt is counted once it is recorded, just after its request
            counted = parse(httpx.get(f"http://127.0.0.1:{worker_port}/metrics").text)
            if value(counted, ATTEMPTS, **SUCCEEDED) == 2 * STEPS or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        ticks = parse(httpx.get(f"http://127.0.0.1:{scheduler_port}/metrics").text)
        made = [p.name for p in temp.iterdir()]
        assert len(made) == 1 and made[0].startswith("linktime-metrics-"), made
    finally:
        stop([worker, scheduler])
        hub.close()
        delete_namespace(redis_url, namespace)
    assert list(temp.iterdir()) == [], "the worker left its metrics directory behind"

    assert value(counted, ATTEMPTS, **SUCCEEDED) == 2 * STEPS, log.read_text()[-3000:]
    assert value(counted, "linktime_runs_finished_total", status="succeeded") == 2
    assert value(counted, "linktime_runs_started_total", trigger="booking.created") == 2
    assert value(ticks, "linktime_scheduler_tick_duration_seconds_count") > 0
    # Each process counts only its own work.
    assert value(ticks, ATTEMPTS, **SUCCEEDED) == 0
    assert value(counted, "linktime_scheduler_tick_duration_seconds_count") == 0


def test_metrics_port_makes_no_directory_for_commands_that_serve_no_metrics(
    tmp_path: Path,
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    env = clean_env(
        LINKTIME_METRICS_PORT=str(free_port()), LINKTIME_LOAD_PLUGINS="", TMPDIR=str(temp)
    )
    done = subprocess.run([LINKTIME, "plans"], env=env, cwd=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert list(temp.iterdir()) == []
