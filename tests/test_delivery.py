"""Webhook chains end to end over PostgreSQL, Redis and a Dramatiq worker, delivered to a real
loopback receiver."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable

import pytest
import redis
from linktime.engine import Ingested
from linktime.models import sample_event
from linktime.storage import Event, Run
from linktime.testing import HttpReceiver, Reply, event_with
from sqlalchemy import func, select
from standardwebhooks import Webhook

from .conftest import System

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789").decode()


def hook(url: str, path: str) -> dict[str, object]:
    return {"action": "webhook.call", "settings": {"url": url + path, "secret": SECRET}}


def test_five_step_chain_is_delivered_in_order_and_signed(
    system: System, http_receiver: HttpReceiver
) -> None:
    acc = system.account()
    wf_id = system.workflow(acc, [hook(http_receiver.url, f"/step{i}") for i in range(5)])
    event = sample_event(id="evt_chain", crm_ref="extra-field-kept")

    ingested = system.hub.emit(event, account_id=acc.id)
    run = system.wait_run(acc, ingested.run_ids[0])

    assert run.status == "succeeded"
    received = http_receiver.wait_for(5)
    assert [r.path for r in received] == [f"/step{i}" for i in range(5)]
    assert [r.at for r in received] == sorted(r.at for r in received)
    verifier = Webhook(SECRET)
    ids = set()
    for r in received:
        body = verifier.verify(r.body, r.headers)  # raises when the signature is wrong
        assert body["type"] == "booking.created"
        assert body["data"]["workflow"] == {"id": wf_id, "name": "test workflow"}
        assert body["data"]["event"]["id"] == "evt_chain"
        assert body["data"]["event"]["crm_ref"] == "extra-field-kept"
        assert body["data"]["booking"]["uid"] == "bk_sample"
        ids.add(r.headers["webhook-id"])
    assert len(ids) == 5  # one id per step
    assert [s.status for s in run.steps] == ["succeeded"] * 5
    assert all(len(s.attempt_log) == 1 and s.attempt_log[0].http_status == 200 for s in run.steps)


def test_each_run_sends_its_own_event(
    make_system: Callable[..., System], allow_loopback: None, http_receiver: HttpReceiver
) -> None:
    """The body is built once per run (``ActionContext.run_cache``), never carried over to the
    next run the same worker thread executes."""
    system = make_system(worker_threads=1)
    acc = system.account()
    system.workflow(acc, [hook(http_receiver.url, f"/step{i}") for i in range(3)])
    other = system.workflow(acc, [hook(http_receiver.url, "/other")], name="second workflow")
    events = [event_with(uid=f"bk_{n}").model_copy(update={"id": f"evt_{n}"}) for n in range(6)]
    run_ids = [rid for e in events for rid in system.hub.emit(e, account_id=acc.id).run_ids]
    system.start()
    for run_id in run_ids:
        assert system.wait_run(acc, run_id).status == "succeeded"

    bodies = [Webhook(SECRET).verify(r.body, r.headers) for r in http_receiver.wait_for(6 * 4)]
    for n in range(6):
        of_event = [b["data"] for b in bodies if b["data"]["event"]["id"] == f"evt_{n}"]
        assert len(of_event) == 4
        assert {data["booking"]["uid"] for data in of_event} == {f"bk_{n}"}
        assert sum(data["workflow"]["id"] == other for data in of_event) == 1


def test_the_same_event_id_runs_once(system: System, http_receiver: HttpReceiver) -> None:
    acc = system.account()
    system.workflow(acc, [hook(http_receiver.url, "/once")])
    first = system.hub.emit(sample_event(id="evt_dup"), account_id=acc.id)
    second = system.hub.emit(sample_event(id="evt_dup"), account_id=acc.id)

    assert second.answer == first.answer
    assert second.replayed and not first.replayed
    assert len(first.run_ids) == 1
    system.wait_run(acc, first.run_ids[0])
    system.settle()  # a second run or message, had the replay made one, has been executed now
    assert [r.path for r in http_receiver.requests] == ["/once"]


def test_the_same_event_posted_concurrently_is_stored_once(
    make_system: Callable[..., System],
) -> None:
    system = make_system()  # no worker: only what ingest stores is looked at
    acc = system.account()
    system.workflow(acc, [hook("http://127.0.0.1:9", "/once")])
    barrier = threading.Barrier(8)
    answers: list[Ingested] = []

    def post() -> None:
        barrier.wait()
        answers.append(system.hub.emit(sample_event(id="evt_race"), account_id=acc.id))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert len(answers) == 8
    assert sum(not a.replayed for a in answers) == 1
    assert all(a.answer == answers[0].answer for a in answers)
    assert len(answers[0].answer["runs"]) == 1
    with system.hub.db.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Event)) == 1
        assert conn.scalar(select(func.count()).select_from(Run)) == 1


def test_503_503_200_succeeds_on_the_third_attempt(
    system: System, http_receiver: HttpReceiver
) -> None:
    http_receiver.script("/flaky", Reply(503), Reply(503), Reply(200))
    acc = system.account()
    system.workflow(acc, [hook(http_receiver.url, "/flaky"), hook(http_receiver.url, "/next")])

    run_id = system.hub.emit(sample_event(), account_id=acc.id).run_ids[0]
    run = system.wait_run(acc, run_id)

    assert run.status == "succeeded"
    flaky, following = run.steps
    assert flaky.status == "succeeded" and flaky.attempts == 3
    assert [(a.number, a.status, a.http_status) for a in flaky.attempt_log] == [
        (1, "retrying", 503),
        (2, "retrying", 503),
        (3, "succeeded", 200),
    ]
    assert flaky.attempt_log[0].error_code == "http_503"
    # every attempt of the step carried the same webhook-id
    sent = [r for r in http_receiver.requests if r.path == "/flaky"]
    assert len({r.headers["webhook-id"] for r in sent}) == 1 and len(sent) == 3
    assert following.status == "succeeded"


def test_404_fails_permanently_and_skips_the_rest(
    system: System, http_receiver: HttpReceiver
) -> None:
    http_receiver.script("/gone", Reply(404, "no such hook"))
    acc = system.account()
    system.workflow(
        acc,
        [hook(http_receiver.url, "/first"), hook(http_receiver.url, "/gone")]
        + [hook(http_receiver.url, f"/later{i}") for i in range(3)],
    )

    run = system.wait_run(acc, system.hub.emit(sample_event(), account_id=acc.id).run_ids[0])

    assert run.status == "failed"
    assert [s.status for s in run.steps] == ["succeeded", "failed", "skipped", "skipped", "skipped"]
    gone = run.steps[1]
    assert [(a.status, a.http_status) for a in gone.attempt_log] == [("failed", 404)]
    assert gone.attempt_log[0].response_excerpt == "no such hook"
    assert not any(r.path.startswith("/later") for r in http_receiver.requests)


def test_retries_exhausted_fail_the_step(system: System, http_receiver: HttpReceiver) -> None:
    http_receiver.default = Reply(500)
    acc = system.account()
    system.workflow(acc, [hook(http_receiver.url, "/down"), hook(http_receiver.url, "/after")])

    run = system.wait_run(acc, system.hub.emit(sample_event(), account_id=acc.id).run_ids[0])

    # the schedule has three retries: four attempts in all
    assert [a.status for a in run.steps[0].attempt_log] == ["retrying"] * 3 + ["failed"]
    assert [s.status for s in run.steps] == ["failed", "skipped"]


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("[::1]", "loopback"),
        ("10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
    ],
)
def test_internal_targets_are_refused_unless_allowed(
    make_system: object, monkeypatch: pytest.MonkeyPatch, host: str, reason: str
) -> None:
    for name in ("LINKTIME_HTTP_ALLOWED_NETWORKS", "LINKTIME_WEBHOOK_ALLOWED_NETWORKS"):
        monkeypatch.delenv(name, raising=False)
    system = make_system()  # type: ignore[operator]
    system.start()
    acc = system.account()
    system.workflow(acc, [hook(f"http://{host}:9", "/x")])

    run = system.wait_run(acc, system.hub.emit(sample_event(), account_id=acc.id).run_ids[0])

    step = run.steps[0]
    assert run.status == "failed" and step.status == "failed"
    attempt = step.attempt_log[0]
    assert attempt.error_code == "ssrf_refused"
    assert reason in attempt.error and "LINKTIME_HTTP_ALLOWED_NETWORKS" in attempt.error


def test_flushed_broker_loses_nothing(
    make_system: object, allow_loopback: None, http_receiver: HttpReceiver
) -> None:
    system = make_system()  # type: ignore[operator]
    acc = system.account()
    system.workflow(acc, [hook(http_receiver.url, "/a"), hook(http_receiver.url, "/b")])
    run_ids = [
        system.hub.emit(sample_event(id=f"evt_{i}"), account_id=acc.id).run_ids[0]
        for i in range(20)
    ]
    client = redis.Redis.from_url(system.hub.settings.redis_url)
    queued = client.keys(f"{system.hub.settings.broker_namespace}:*")
    assert queued  # the messages are queued
    # This system's whole broker state lost; other systems on the same Redis keep theirs.
    client.delete(*queued)

    system.start()  # nothing in the broker now: the scheduler must re-send every run
    runs = [system.wait_run(acc, run_id) for run_id in run_ids]

    assert all(r.status == "succeeded" for r in runs)
    assert len(http_receiver.requests) == 40
    assert len({r.headers["webhook-id"] for r in http_receiver.requests}) == 40
