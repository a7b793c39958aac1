"""Kill -9 of real worker and server processes mid-chain: no step lost, none re-sent after it
was recorded as succeeded."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
from linktime import workflows
from linktime.accounts import create_account
from linktime.engine import Hub
from linktime.models import sample_event
from linktime.settings import Settings
from linktime.testing import HttpReceiver, Reply

from .conftest import LOOPBACK, delete_namespace
from .procs import (
    assert_nothing_lost_nothing_resent,
    clean_env,
    drain,
    kill9,
    serve_with_account,
    services_env,
    start,
    step_states,
    stop,
    wait_http,
)
from .test_delivery import SECRET

RUNS, STEPS = 3, 5


def chain(url: str) -> list[dict[str, object]]:
    return [
        {"action": "webhook.call", "settings": {"url": f"{url}/s{i}", "secret": SECRET}}
        for i in range(STEPS)
    ]


def test_kill_9_of_a_worker_mid_chain(
    tmp_path: Path, pg_url: str, redis_url: str, http_receiver: HttpReceiver
) -> None:
    namespace = f"lt-crash-{uuid.uuid4().hex[:8]}"
    env = services_env(
        pg_url,
        redis_url,
        namespace,
        LINKTIME_SECRET_KEY="crash-test",
        LINKTIME_STEP_LEASE_SECONDS="3",
        # Every installed action's timeout must be below the lease, or the worker refuses to start.
        LINKTIME_WEBHOOK_TIMEOUT="2",
        LINKTIME_REQUEUE_AFTER_SECONDS="1",
    )
    settings = Settings(
        data_dir=tmp_path,
        database_url=pg_url,
        redis_url=redis_url,
        secret_key="crash-test",
        requeue_after_seconds=1,
    )
    hub = Hub(settings)
    hub.migrate()
    acc = create_account(hub, "crash", "business")
    workflows.create(
        hub,
        acc.id,
        workflows.WorkflowIn(
            name="chain", trigger="booking.created", enabled=True, steps=chain(http_receiver.url)
        ),
    )
    http_receiver.default = Reply(delay=0.4)  # slow receiver: the kill lands mid-request
    log = tmp_path / "procs.log"
    scheduler = start(["scheduler"], env, tmp_path, log)
    worker = start(["worker", "--processes", "1", "--threads", "2"], env, tmp_path, log)
    fresh = None
    try:
        # The in-process hub has no broker bound: the scheduler sends these runs' messages.
        for i in range(RUNS):
            hub.emit(sample_event(id=f"evt_{i}"), account_id=acc.id)
        http_receiver.wait_for(4, timeout=30)
        kill9(worker)
        before = step_states(pg_url)
        assert "running" in before.values() or "pending" in before.values()

        fresh = start(["worker", "--processes", "1", "--threads", "2"], env, tmp_path, log)
        deadline = time.monotonic() + 60
        while set(step_states(pg_url).values()) != {"succeeded"}:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        # Before counting: nothing hands out runs any more, and every message handed out so
        # far (the killed worker's unfinished ones too) has been processed.
        stop([scheduler])
        drain(redis_url, namespace)
        assert_nothing_lost_nothing_resent(before, step_states(pg_url), http_receiver.requests)
        assert len(step_states(pg_url)) == RUNS * STEPS
    finally:
        stop([p for p in (scheduler, worker, fresh) if p is not None])
        hub.close()
        delete_namespace(redis_url, namespace)


def test_embedded_default_end_to_end_and_restart(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    """`linktime serve` with no services configured: SQLite, in-process broker and worker."""
    # One worker thread: runs execute in the order their messages were sent (see the marker).
    env = clean_env(LINKTIME_HTTP_ALLOWED_NETWORKS=LOOPBACK, LINKTIME_WORKER_THREADS="1")
    served = serve_with_account(env, tmp_path, "--plan", "free")
    serve, port, base, log = served.proc, served.port, served.base, served.log
    restarted = None
    headers = {"Authorization": f"Bearer {served.key}"}
    try:
        for name, trigger, steps in [
            ("chain", "booking.created", chain(http_receiver.url)),
            ("marker", "booking.cancelled", chain(http_receiver.url + "/marker")[:1]),
        ]:
            r = httpx.post(
                f"{base}/v1/workflows",
                headers=headers,
                json={"name": name, "trigger": trigger, "enabled": True, "steps": steps},
            )
            assert r.status_code == 201, r.text

        event = sample_event(id="evt_first").model_dump(mode="json")
        run_id = httpx.post(f"{base}/v1/events", headers=headers, json=event).json()["runs"][0][
            "id"
        ]
        run = wait_run(base, headers, run_id)
        assert [s["status"] for s in run["steps"]] == ["succeeded"] * STEPS
        assert [r.path for r in http_receiver.wait_for(STEPS)] == [f"/s{i}" for i in range(STEPS)]

        # Now a second chain, with the process killed half-way through.
        http_receiver.requests.clear()
        http_receiver.default = Reply(delay=0.4)
        event = sample_event(id="evt_second").model_dump(mode="json")
        run_id = httpx.post(f"{base}/v1/events", headers=headers, json=event).json()["runs"][0][
            "id"
        ]
        http_receiver.wait_for(2, timeout=20)
        kill9(serve)
        db_url = f"sqlite:///{tmp_path / '.linktime' / 'linktime.db'}"
        before = step_states(db_url, run_id)

        restarted = start(["serve", "--port", str(port)], env, tmp_path, log)
        wait_http(f"{base}/healthz")
        run = wait_run(base, headers, run_id)
        assert run["status"] == "succeeded", run
        # Before counting: a marker run sent now has finished, so every message sent before it
        # (a second hand-out of the resumed run, say) has been executed.
        marker = sample_event("booking.cancelled", id="evt_marker").model_dump(mode="json")
        marker_run = httpx.post(f"{base}/v1/events", headers=headers, json=marker).json()
        assert wait_run(base, headers, marker_run["runs"][0]["id"])["status"] == "succeeded"
        received = [r for r in http_receiver.requests if not r.path.startswith("/marker")]
        assert_nothing_lost_nothing_resent(before, step_states(db_url, run_id), received)
        stop([restarted])
        # uvicorn re-raises SIGTERM after a graceful shutdown; the log tells that it was one
        # (a failing shutdown hook logs "Application shutdown failed" instead)
        assert "Application shutdown complete" in log.read_text().split("Finished server")[-2]
    finally:
        stop([p for p in (serve, restarted) if p is not None])


def wait_run(
    base: str, headers: dict[str, str], run_id: str, timeout: float = 30
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        run = httpx.get(f"{base}/v1/runs/{run_id}", headers=headers).json()
        if run["status"] in ("succeeded", "failed"):
            return dict(run)
        assert time.monotonic() < deadline, f"run still {run['status']}"
        time.sleep(0.1)
