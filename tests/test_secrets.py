"""Step secrets over the HTTP API, PostgreSQL and a real loopback receiver: a PUT keeps a secret
left out or sent masked and changes it only to a new value (for every secret setting of every
action, by the core); webhook header values are sealed at rest and masked in every answer."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from linktime import workflows
from linktime.actions import ActionContext, ActionType, Result
from linktime.api import create_app
from linktime.errors import InputError
from linktime.models import sample_event
from linktime.storage import Base, Integration, WorkflowStep
from linktime.testing import HttpReceiver, Received
from litestar.testing import TestClient
from pydantic import BaseModel, SecretStr
from sqlalchemy import select, text
from standardwebhooks import Webhook, WebhookVerificationError

from .conftest import System, registry_with

MASK = "********"
NEW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BEARER = "Bearer tok-7f3c9a1e-do-not-leak"


class Api:
    """One account's view of the system through the HTTP API; runs are executed in the test's
    thread (``deliver``), so every delivery is over when the call returns."""

    def __init__(self, system: System, client: TestClient[Any], receiver: HttpReceiver) -> None:
        self.system, self.client, self.receiver = system, client, receiver
        self.headers = {"Authorization": f"Bearer {system.account().api_key}"}
        self.answers: list[str] = []  # every answer's body, to search for leaks
        self.event_ids = (f"evt_{n}" for n in itertools.count())

    def call(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        response = self.client.request(method, path, headers=self.headers, **kw)
        assert response.status_code == status, response.text
        self.answers.append(response.text)
        return response.json()

    def workflow(self, *steps: dict[str, Any]) -> dict[str, Any]:
        body = {"name": "Hooks", "trigger": "booking.created", "enabled": True, "steps": steps}
        return self.call("POST", "/v1/workflows", 201, json=body)  # type: ignore[no-any-return]

    def put(self, wf_id: str, *steps: dict[str, Any], status: int = 200) -> dict[str, Any]:
        body = {"name": "Hooks", "trigger": "booking.created", "enabled": True, "steps": steps}
        return self.call("PUT", f"/v1/workflows/{wf_id}", status, json=body)  # type: ignore[no-any-return]

    def deliver(self) -> tuple[str, list[Received]]:
        """Post a booking event, run what it started to the end; the run and the requests
        the receiver got for it."""
        before = len(self.receiver.requests)
        event = sample_event(id=next(self.event_ids)).model_dump(mode="json")
        [run] = self.call("POST", "/v1/events", 202, json=event)["runs"]
        self.system.hub.process_run(run["id"])
        assert self.call("GET", f"/v1/runs/{run['id']}")["status"] == "succeeded"
        return run["id"], self.receiver.requests[before:]

    def hook(self, path: str, **settings: Any) -> dict[str, Any]:
        return {
            "action": "webhook.call",
            "settings": {"url": f"{self.receiver.url}{path}", **settings},
        }


@pytest.fixture
def api(
    make_system: Callable[..., System], http_receiver: HttpReceiver, allow_loopback: None
) -> Iterator[Api]:
    system = make_system()
    with TestClient(create_app(system.hub)) as client:
        yield Api(system, client, http_receiver)


def signed_with(request: Received, secret: str) -> bool:
    try:
        Webhook(secret).verify(request.body, request.headers)
    except WebhookVerificationError:
        return False
    return True


def test_put_keeps_a_signing_secret_left_out_or_masked_and_changes_it_to_a_new_value(
    api: Api,
) -> None:
    created = api.workflow(api.hook("/a"))
    [generated] = created["generated_secrets"]
    assert (generated["step"], generated["field"]) == (0, "secret")
    first = generated["value"]
    wf_id = created["id"]
    run_id, [request] = api.deliver()
    assert signed_with(request, first)
    # The run log names the delivery as the receiver de-duplicates it: by its webhook-id.
    [attempt] = api.call("GET", f"/v1/runs/{run_id}")["steps"][0]["attempt_log"]
    assert attempt["external_id"] == request.headers["webhook-id"]

    # Left out, then sent back masked (as GET shows it), the step named by its id: kept, and
    # nothing generated.
    step_id = created["steps"][0]["id"]
    for settings in ({}, {"secret": MASK}):
        saved = api.put(wf_id, {**api.hook("/b", **settings), "id": step_id})
        assert saved["generated_secrets"] == []
        assert saved["steps"][0]["settings"]["secret"] == MASK
        _, [request] = api.deliver()
        assert request.path == "/b" and signed_with(request, first)

    # Without the id, the step at its position keeps it only while its other settings stay.
    api.put(wf_id, api.hook("/b"))
    _, [request] = api.deliver()
    assert signed_with(request, first)
    moved = api.put(wf_id, api.hook("/elsewhere", secret=MASK), status=422)
    assert [f["field"] for f in moved["fields"]] == ["steps.0.id"]
    assert "send the step's id" in moved["fields"][0]["message"]

    # A new value replaces it.
    api.put(wf_id, api.hook("/c", secret=NEW_SECRET))
    _, [request] = api.deliver()
    assert signed_with(request, NEW_SECRET) and not signed_with(request, first)

    # A step added by PUT gets its own secret, returned once as from POST; the first keeps its.
    saved = api.put(wf_id, api.hook("/c"), api.hook("/d"))
    [added] = saved["generated_secrets"]
    assert (added["step"], added["field"]) == (1, "secret")
    assert added["value"] not in (first, NEW_SECRET)
    _, requests = api.deliver()
    assert [r.path for r in requests] == ["/c", "/d"]
    assert signed_with(requests[0], NEW_SECRET) and signed_with(requests[1], added["value"])
    shown = api.call("GET", f"/v1/workflows/{wf_id}")
    assert added["value"] not in str(shown) and NEW_SECRET not in str(shown)


def test_put_matches_steps_by_id_else_by_position_and_action(api: Api) -> None:
    created = api.workflow(api.hook("/a"), api.hook("/b"))
    secret_a, secret_b = (g["value"] for g in created["generated_secrets"])
    wf_id = created["id"]
    id_a, id_b = (s["id"] for s in api.call("GET", f"/v1/workflows/{wf_id}")["steps"])

    # Swapped, each named by its id: each keeps its own secret and its id.
    saved = api.put(wf_id, {**api.hook("/b"), "id": id_b}, {**api.hook("/a"), "id": id_a})
    assert saved["generated_secrets"] == []
    assert [s["id"] for s in saved["steps"]] == [id_b, id_a]
    _, requests = api.deliver()
    assert [r.path for r in requests] == ["/b", "/a"]
    assert signed_with(requests[0], secret_b) and signed_with(requests[1], secret_a)

    # Without ids, two steps of one action cannot keep their secrets by position (which is
    # which?): each is named; with new secrets they are saved.
    ambiguous = api.put(wf_id, api.hook("/x"), api.hook("/y"), status=422)
    assert [f["field"] for f in ambiguous["fields"]] == ["steps.0.id", "steps.1.id"]
    api.put(wf_id, api.hook("/x", secret=NEW_SECRET), api.hook("/y", secret=NEW_SECRET))
    _, requests = api.deliver()
    assert all(signed_with(r, NEW_SECRET) for r in requests)

    # An id this workflow does not have, or given twice, is named; nothing changes.
    wrong = api.put(wf_id, {**api.hook("/z"), "id": "wfs_nope"}, status=422)
    assert [f["field"] for f in wrong["fields"]] == ["steps.0.id"]
    twice = api.put(
        wf_id, {**api.hook("/z"), "id": id_a}, {**api.hook("/z"), "id": id_a}, status=422
    )
    assert [f["field"] for f in twice["fields"]] == ["steps.1.id"]
    assert [
        s["settings"]["url"][-2:] for s in api.call("GET", f"/v1/workflows/{wf_id}")["steps"]
    ] == [
        "/x",
        "/y",
    ]


def test_steps_reordered_without_ids_never_carry_secrets_to_another_url(api: Api) -> None:
    a = api.hook("/a", secret=NEW_SECRET, headers={"Authorization": "Bearer TOKEN_AAA"})
    b = api.hook("/b", headers={"Authorization": "Bearer TOKEN_BBB"})
    created = api.workflow(a, b)
    wf_id = created["id"]
    [generated] = created["generated_secrets"]
    masked = {"secret": MASK, "headers": {"Authorization": MASK}}

    swapped = api.put(wf_id, api.hook("/b", **masked), api.hook("/a", **masked), status=422)
    assert [f["field"] for f in swapped["fields"]] == ["steps.0.id", "steps.1.id"]
    _, requests = api.deliver()
    assert [(r.path, r.headers["authorization"]) for r in requests] == [
        ("/a", "Bearer TOKEN_AAA"),
        ("/b", "Bearer TOKEN_BBB"),
    ]
    assert signed_with(requests[0], NEW_SECRET) and signed_with(requests[1], generated["value"])

    # A lone step of its action whose URL changed, without its id, is refused the same way.
    lone = api.workflow(api.hook("/c", headers={"Authorization": "Bearer TOKEN_CCC"}))
    moved = api.put(lone["id"], api.hook("/d", headers={"Authorization": MASK}), status=422)
    assert [f["field"] for f in moved["fields"]] == ["steps.0.id"]


def test_the_mask_where_no_secret_is_stored_is_refused(api: Api) -> None:
    bad = api.call(
        "POST",
        "/v1/workflows",
        422,
        json={"name": "w", "trigger": "booking.created", "steps": [api.hook("/a", secret=MASK)]},
    )
    assert [f["field"] for f in bad["fields"]] == ["steps.0.settings.secret"]
    assert api.call("GET", "/v1/workflows") == []
    wf_id = api.workflow(api.hook("/a"))["id"]
    bad = api.put(wf_id, api.hook("/a", headers={"X-Token": MASK}), status=422)
    assert [f["field"] for f in bad["fields"]] == ["steps.0.settings.headers.X-Token"]


def test_a_header_value_that_cannot_be_sent_is_refused_at_save(api: Api) -> None:
    step = api.hook("/a", headers={"X-Tenant": "acme", "Authorization": "Bearer cafébar"})
    body = {"name": "w", "trigger": "booking.created", "steps": [step]}
    bad = api.call("POST", "/v1/workflows", 422, json=body)
    assert [f["field"] for f in bad["fields"]] == ["steps.0.settings.headers.Authorization"]
    assert "cafébar" not in json.dumps(bad)
    assert api.call("GET", "/v1/workflows") == []


def test_webhook_header_values_are_sealed_masked_everywhere_and_still_sent(api: Api) -> None:
    created = api.workflow(api.hook("/a", headers={"Authorization": BEARER, "X-Tenant": "acme"}))
    assert created["steps"][0]["settings"]["headers"] == {"Authorization": MASK, "X-Tenant": MASK}
    wf_id = created["id"]
    run_id, [request] = api.deliver()
    assert (request.headers["authorization"], request.headers["x-tenant"]) == (BEARER, "acme")

    # Every read: the workflow, the list, a dry run, the run log and its list, the event.
    api.call("GET", f"/v1/workflows/{wf_id}")
    api.call("GET", "/v1/workflows")
    dry = api.call("POST", f"/v1/workflows/{wf_id}/test", json={"mode": "dry_run"})
    assert dry["steps"][0]["output"]["headers"]["Authorization"] == MASK
    api.call("GET", f"/v1/runs/{run_id}")
    api.call("GET", "/v1/runs")
    api.call("GET", "/v1/events/evt_0")
    assert not [answer for answer in api.answers if "tok-7f3c9a1e" in answer]

    # Nor in any row of any table.
    with api.system.hub.db.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(text(f"SELECT CAST(t AS text) FROM {table.name} t")).scalars()
            assert not [row for row in rows if "tok-7f3c9a1e" in row], table.name

    # Per header: masked keeps it, left out removes it, a new one is added; the whole mapping
    # left out keeps them all.
    api.put(wf_id, api.hook("/a", headers={"Authorization": MASK, "X-New": "1"}))
    _, [request] = api.deliver()
    assert request.headers["authorization"] == BEARER and request.headers["x-new"] == "1"
    assert "x-tenant" not in request.headers
    api.put(wf_id, api.hook("/a"))
    _, [request] = api.deliver()
    assert request.headers["authorization"] == BEARER and request.headers["x-new"] == "1"


def test_a_header_sent_masked_keeps_its_stored_value_whatever_the_name_s_case(api: Api) -> None:
    wf_id = api.workflow(api.hook("/a", headers={"Authorization": BEARER}))["id"]
    # HTTP header names are case-insensitive: the mask under "authorization" is the stored one.
    saved = api.put(wf_id, api.hook("/a", headers={"authorization": MASK, "X-Other": "1"}))
    assert saved["steps"][0]["settings"]["headers"] == {"authorization": MASK, "X-Other": MASK}
    _, [request] = api.deliver()
    assert request.headers["authorization"] == BEARER
    api.put(wf_id, api.hook("/a", headers={"AUTHORIZATION": MASK, "x-other": MASK}))
    _, [request] = api.deliver()
    assert (request.headers["authorization"], request.headers["x-other"]) == (BEARER, "1")


class Credentials(BaseModel):
    """Settings of a third-party action: a required secret, an optional one, a mapping."""

    api_key: SecretStr
    fallback_key: SecretStr | None = None
    extra: dict[str, SecretStr] = {}


SEEN: list[Credentials] = []


def remember(ctx: ActionContext) -> Result:
    SEEN.append(ctx.settings)
    return Result.ok()


def test_any_action_s_secret_settings_are_kept_by_the_core(
    make_system: Callable[..., System],
) -> None:
    action = ActionType("acme.send", "Acme", Credentials, remember)
    system = make_system(registry=registry_with(action))
    account = system.account()
    spec = workflows.WorkflowIn(
        name="Acme",
        trigger="booking.created",
        enabled=True,
        steps=[
            workflows.StepIn(
                action="acme.send",
                settings={"api_key": "k1", "fallback_key": "f1", "extra": {"X-A": "a1"}},
            )
        ],
    )
    created, generated = workflows.create(system.hub, account.id, spec)
    assert generated == []
    edited = spec.model_copy(
        update={
            "steps": [
                workflows.StepIn(action="acme.send", settings={"fallback_key": MASK, "extra": {}})
            ]
        }
    )
    workflows.update(system.hub, account.id, created.id, edited)
    SEEN.clear()
    [run_id] = system.hub.emit(sample_event(id="evt_acme"), account_id=account.id).run_ids
    system.hub.process_run(run_id)
    [seen] = SEEN
    assert seen.api_key.get_secret_value() == "k1"
    assert seen.fallback_key is not None and seen.fallback_key.get_secret_value() == "f1"
    assert seen.extra == {}


class AcmeCredentials(BaseModel):
    account: str
    token: SecretStr


def test_an_integration_keeps_its_secret_left_out_or_masked(
    make_system: Callable[..., System],
) -> None:
    action = ActionType(
        "acme.ping",
        "Ping",
        Credentials,
        remember,
        credentials=AcmeCredentials,
        integration="acme",
    )
    system = make_system(registry=registry_with(action))
    auth = {"Authorization": f"Bearer {system.account().api_key}"}

    def stored_token() -> str:
        with system.hub.db.connect() as conn:
            stored = conn.scalar(select(Integration.settings))
        return str(system.hub.sealer.secrets(AcmeCredentials, stored)["token"])

    with TestClient(create_app(system.hub)) as client:
        masked = client.put(
            "/v1/integrations/acme", json={"account": "a", "token": MASK}, headers=auth
        )
        assert masked.status_code == 422
        assert [f["field"] for f in masked.json()["fields"]] == ["token"]
        assert client.get("/v1/integrations/acme", headers=auth).json()["connected"] is False

        client.put("/v1/integrations/acme", json={"account": "a", "token": "t-1"}, headers=auth)
        for body in ({"account": "b"}, {"account": "c", "token": MASK}):
            answer = client.put("/v1/integrations/acme", json=body, headers=auth)
            assert answer.status_code == 200
            assert answer.json()["settings"] == {"account": body["account"], "token": MASK}
            assert stored_token() == "t-1"
        client.put("/v1/integrations/acme", json={"account": "c", "token": "t-2"}, headers=auth)
        assert stored_token() == "t-2"


def test_after_the_secret_key_changed_only_new_secrets_are_saved(
    make_system: Callable[..., System],
) -> None:
    before = make_system()
    account = before.account()
    spec = workflows.WorkflowIn(
        name="Hook",
        trigger="booking.created",
        steps=[workflows.StepIn(action="webhook.call", settings={"url": "https://example.com/"})],
    )
    created, _ = workflows.create(before.hub, account.id, spec)
    after = make_system(secret_key="another-key")  # the same database

    with pytest.raises(InputError) as refused:
        workflows.update(after.hub, account.id, created.id, spec)
    [problem] = refused.value.fields
    assert problem.field == "steps.0.settings" and "LINKTIME_SECRET_KEY" in problem.message

    settings = {"url": "https://example.com/", "secret": NEW_SECRET, "headers": {}}
    anew = spec.model_copy(
        update={"steps": [workflows.StepIn(action="webhook.call", settings=settings)]}
    )
    _, generated = workflows.update(after.hub, account.id, created.id, anew)
    assert generated == []
    model = after.hub.registry.actions["webhook.call"].settings
    with after.hub.db.connect() as conn:
        stored = conn.scalar(select(WorkflowStep.settings))
    assert after.hub.sealer.secrets(model, stored)["secret"] == NEW_SECRET
