"""Webhook endpoints as Svix keeps them, end to end: secret rotation (both signatures for 24
hours), 410 and 5 days of failures disable, a disabled endpoint's steps fail at once, re-enable
resumes, the receiver's abort header, Send example, Settings → Webhooks and account scoping.
The receiver is linktime.testing's ``http_receiver``; signatures are checked with
``standardwebhooks``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from linktime.accounts import NewAccount
from linktime.api import create_app
from linktime.models import sample_event
from linktime.testing import HttpReceiver, Reply
from litestar.testing import TestClient
from standardwebhooks import Webhook, WebhookVerificationError

from .conftest import Clock, System
from .test_dashboard import Dash

OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Setup:
    """A running system with a clock the test moves, an account, its API client."""

    def __init__(self, system: System, client: TestClient[Any], clock: Clock) -> None:
        self.system, self.client, self.clock = system, client, clock
        self.account = system.account()
        self.events = 0

    def api(self, method: str, path: str, account: NewAccount | None = None) -> Any:
        key = (account or self.account).api_key
        return self.client.request(method, path, headers={"Authorization": f"Bearer {key}"})

    def webhook_workflow(self, *urls: str) -> str:
        steps = [{"action": "webhook.call", "settings": {"url": u, "secret": OLD}} for u in urls]
        return self.system.workflow(self.account, steps)

    def run(self) -> Any:
        """Emit a booking event and wait for the one run it starts to finish."""
        self.events += 1
        event = sample_event(id=f"evt_{self.events}")
        [run_id] = self.system.hub.emit(event, account_id=self.account.id).run_ids
        return self.system.wait_run(self.account, run_id)

    def endpoint(self, url: str) -> dict[str, Any]:
        found = [e for e in self.api("GET", "/v1/endpoints").json() if e["url"] == url]
        assert len(found) == 1, found
        detail: dict[str, Any] = self.api("GET", f"/v1/endpoints/{found[0]['id']}").json()
        return detail


@pytest.fixture
def setup(
    make_system: Callable[..., System], allow_loopback: None, http_receiver: HttpReceiver
) -> Iterator[Setup]:
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    system = make_system(clock=clock)
    system.start()
    with TestClient(create_app(system.hub)) as client:
        yield Setup(system, client, clock)


def _signatures(headers: dict[str, str]) -> list[str]:
    return headers["webhook-signature"].split(" ")


def test_rotation_signs_with_both_secrets_for_24_hours_then_the_new_one(
    setup: Setup, http_receiver: HttpReceiver
) -> None:
    wf = setup.webhook_workflow(http_receiver.url + "/hook")
    answer = setup.api("POST", f"/v1/workflows/{wf}/steps/0/rotate-secret")
    assert answer.status_code == 200, answer.text
    rotated = answer.json()
    new = rotated["secret"]
    assert new.startswith("whsec_") and new != OLD and rotated["field"] == "secret"
    until = datetime.fromisoformat(rotated["previous_valid_until"])
    assert until == setup.clock.now + timedelta(hours=24)
    # Stored sealed: the API shows it masked, never the value.
    shown = setup.api("GET", f"/v1/workflows/{wf}").json()["steps"][0]["settings"]
    assert shown["secret"] == shown["previous_secret"] == "********"
    assert new not in setup.api("GET", f"/v1/workflows/{wf}").text

    assert setup.run().status == "succeeded"
    [req] = http_receiver.wait_for(1)
    assert len(_signatures(req.headers)) == 2
    assert Webhook(OLD).verify(req.body, req.headers)["data"]["event"]["id"] == "evt_1"
    assert Webhook(new).verify(req.body, req.headers)["data"]["event"]["id"] == "evt_1"

    # Rotated again 25 hours ago by the hub's clock: that window is over, one signature.
    setup.clock.advance(hours=-25)
    newer = setup.api("POST", f"/v1/workflows/{wf}/steps/0/rotate-secret").json()["secret"]
    setup.clock.advance(hours=25)
    assert setup.run().status == "succeeded"
    second = http_receiver.wait_for(2)[1]
    assert len(_signatures(second.headers)) == 1
    Webhook(newer).verify(second.body, second.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(second.body, second.headers)


def test_a_retry_and_a_replay_after_rotation_are_signed_with_the_new_secret(
    setup: Setup, http_receiver: HttpReceiver
) -> None:
    url = http_receiver.url + "/flaky"
    answers = iter([Reply(400, "no"), Reply(500, "down"), Reply(200, "ok"), Reply(200, "ok")])
    http_receiver.handler = lambda _: next(answers)
    wf = setup.webhook_workflow(url)
    failed = setup.run()  # 400: failed, to be replayed after the rotation
    assert failed.status == "failed"
    setup.events += 1
    event = sample_event(id="evt_rotate_retry")
    [run_id] = setup.system.hub.emit(event, account_id=setup.account.id).run_ids
    http_receiver.wait_for(2)
    setup.system.settle()
    new = setup.api("POST", f"/v1/workflows/{wf}/steps/0/rotate-secret").json()["secret"]

    setup.clock.advance(seconds=6)  # the retry is due
    setup.system.settle()
    [_, first, retry] = http_receiver.wait_for(3)
    assert len(_signatures(first.headers)) == 1
    assert len(_signatures(retry.headers)) == 2  # as every delivery in the window
    Webhook(new).verify(retry.body, retry.headers)
    Webhook(OLD).verify(retry.body, retry.headers)
    assert setup.system.wait_run(setup.account, run_id).status == "succeeded"

    replay = setup.api("POST", f"/v1/runs/{failed.id}/replay").json()
    assert setup.system.wait_run(setup.account, replay["id"]).status == "succeeded"
    replayed = http_receiver.wait_for(4)[3]
    assert len(_signatures(replayed.headers)) == 2
    Webhook(new).verify(replayed.body, replayed.headers)


def test_410_disables_at_once_and_re_enable_resumes(
    setup: Setup, http_receiver: HttpReceiver
) -> None:
    url = http_receiver.url + "/gone"
    wf = setup.webhook_workflow(url)
    http_receiver.script("/gone", Reply(410, "gone"))
    first = setup.run()
    assert (first.status, first.steps[0].error_code) == ("failed", "http_410")

    endpoint = setup.endpoint(url)
    assert endpoint["state"] == "disabled"
    assert "410" in endpoint["disabled_reason"]
    # The next run's step fails at once, unsent: the run has finished, and the receiver got
    # only the first request.
    second = setup.run()
    step = second.steps[0]
    assert (second.status, step.error_code) == ("failed", "endpoint_disabled")
    assert step.attempt_log[0].http_status is None
    assert [r.path for r in http_receiver.requests] == ["/gone"]
    # Send example still goes to a disabled endpoint: how the user sees it works again. It
    # re-enables nothing.
    example = setup.api("POST", f"/v1/workflows/{wf}/steps/0/example").json()
    assert setup.system.wait_run(setup.account, example["run_id"]).status == "succeeded"
    assert [r.path for r in http_receiver.wait_for(2)] == ["/gone", "/gone"]
    assert setup.endpoint(url)["state"] == "disabled"

    answer = setup.api("POST", f"/v1/endpoints/{endpoint['id']}/enable")
    assert answer.status_code == 200 and answer.json()["state"] == "active"
    assert setup.run().status == "succeeded"
    assert [r.path for r in http_receiver.wait_for(3)] == ["/gone"] * 3
    after = setup.endpoint(url)
    assert after["state"] == "active"
    assert [d["http_status"] for d in after["deliveries"]] == [200, 200, None, 410]
    assert after["success_rate"] == 0.6667  # the refusal sent nothing and does not count


def test_five_days_of_failures_disable(setup: Setup, http_receiver: HttpReceiver) -> None:
    url = http_receiver.url + "/down"
    http_receiver.handler = lambda _: Reply(500, "down")
    setup.webhook_workflow(url)
    setup.events += 1
    [run_id] = setup.system.hub.emit(
        sample_event(id="evt_down"), account_id=setup.account.id
    ).run_ids
    http_receiver.wait_for(1)
    setup.system.settle()
    assert setup.endpoint(url)["state"] == "active"
    setup.clock.advance(days=5, seconds=1)  # the retry is due, 5 days after the first failure
    setup.system.settle()
    http_receiver.wait_for(2)
    endpoint = setup.endpoint(url)
    assert endpoint["state"] == "disabled"
    assert endpoint["disabled_reason"] == "every delivery failed for 5 days"
    assert endpoint["success_rate"] == 0.0
    setup.clock.advance(seconds=1)
    run = setup.system.wait_run(setup.account, run_id)
    assert run.steps[0].error_code == "endpoint_disabled"
    assert len(http_receiver.requests) == 2


def test_the_abort_header_stops_retries(setup: Setup, http_receiver: HttpReceiver) -> None:
    setup.webhook_workflow(http_receiver.url + "/abort")
    http_receiver.script("/abort", Reply(503, headers={"Webhook-Delivery": "abort-message"}))
    run = setup.run()
    step = run.steps[0]
    assert (run.status, step.error_code, step.attempts) == ("failed", "aborted_by_receiver", 1)
    assert "abort-message" in (step.error or "")


def test_send_example_arrives_signed_and_marked_as_a_test(
    setup: Setup, http_receiver: HttpReceiver
) -> None:
    wf = setup.webhook_workflow(http_receiver.url + "/example")
    answer = setup.api("POST", f"/v1/workflows/{wf}/steps/0/example")
    assert answer.status_code == 202, answer.text
    sent = answer.json()
    assert sent["event_id"].startswith("test_")
    [req] = http_receiver.wait_for(1)
    body = Webhook(OLD).verify(req.body, req.headers)
    assert body["data"]["event"]["id"] == sent["event_id"]
    run = setup.system.wait_run(setup.account, sent["run_id"])
    assert (run.status, run.test) == ("succeeded", True)


def test_settings_webhooks_shows_state_rate_and_deliveries(
    setup: Setup, http_receiver: HttpReceiver
) -> None:
    url = http_receiver.url + "/page"
    wf = setup.webhook_workflow(url)
    http_receiver.script("/page", Reply(410))
    failed = setup.run()
    dash = Dash(setup.client)
    dash.sign_in(setup.account.api_key)
    html = dash.get("/settings/webhooks").text
    assert url in html and "Disabled" in html and "answered 410 Gone" in html
    assert "0% of 1" in html
    assert f'href="/runs/{failed.id}"' in html and ">410<" in html
    endpoint = setup.endpoint(url)
    # The workflows list and the editor say so, the editor with a Re-enable button.
    listed = dash.get("/workflows").text
    assert "Step 1's webhook endpoint" in listed and f"#{endpoint['id']}" in listed
    editor = dash.get(f"/workflows/{wf}").text
    assert f'formaction="/settings/webhooks/{endpoint["id"]}/enable' in editor
    assert f'formaction="/workflows/{wf}/steps/0/rotate-secret"' in editor
    assert f'formaction="/workflows/{wf}/steps/0/example"' in editor

    answer = dash.post(f"/settings/webhooks/{endpoint['id']}/enable?back=/workflows/{wf}")
    assert (answer.status_code, answer.headers["location"]) == (303, f"/workflows/{wf}")
    html = dash.get("/settings/webhooks").text
    assert "Active" in html and "Re-enable" not in html
    assert "disabled-endpoint" not in dash.get("/workflows").text

    # Rotate secret shows the new one once, in the page it returns to.
    answer = dash.post(f"/workflows/{wf}/steps/0/rotate-secret")
    assert answer.status_code == 303
    shown = dash.get(answer.headers["location"]).text
    assert "has a new signing secret: whsec_" in shown
    assert "has a new signing secret" not in dash.get(f"/workflows/{wf}").text


def test_another_account_s_endpoints_and_steps_are_404(
    setup: Setup, http_receiver: HttpReceiver
) -> None:
    url = http_receiver.url + "/mine"
    wf = setup.webhook_workflow(url)
    setup.run()
    endpoint = setup.endpoint(url)
    other = setup.system.account()
    assert setup.api("GET", "/v1/endpoints", other).json() == []
    for method, path in (
        ("GET", f"/v1/endpoints/{endpoint['id']}"),
        ("POST", f"/v1/endpoints/{endpoint['id']}/enable"),
        ("POST", f"/v1/workflows/{wf}/steps/0/rotate-secret"),
        ("POST", f"/v1/workflows/{wf}/steps/0/example"),
    ):
        assert setup.api(method, path, other).status_code == 404, path
    assert setup.api("POST", f"/v1/workflows/{wf}/steps/3/rotate-secret").status_code == 404
    # A position no workflow has is refused before the database sees it, on the API and pages.
    huge = 2**63
    for position in (huge, -1):
        answer = setup.api("POST", f"/v1/workflows/{wf}/steps/{position}/rotate-secret")
        assert answer.status_code == 422, answer.text
        assert [f["field"] for f in answer.json()["fields"]] == ["position"]
    dash = Dash(setup.client)
    dash.sign_in(setup.account.api_key)
    dash.get(f"/workflows/{wf}")
    refused = dash.post(f"/workflows/{wf}/steps/{huge}/example", {})
    assert refused.status_code == 422 and "position" in refused.text
    assert endpoint["used_by"] == [
        {"workflow_id": wf, "workflow_name": "test workflow", "position": 0, "enabled": True}
    ]
