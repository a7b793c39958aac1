"""Provider callbacks through ``POST /v1/callbacks/{name}/{account key}``: a test plugin's
callback verifies an HMAC header with the account's integration secret; what it reports moves
the account's attempts forward only, and its opt-outs land on the suppression list."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from linktime import plugins
from linktime.accounts import NewAccount
from linktime.actions import ActionContext, ActionType, Result
from linktime.api import create_app
from linktime.callbacks import (
    Callback,
    CallbackAnswer,
    CallbackRefused,
    CallbackRequest,
    DeliveryUpdate,
)
from linktime.models import sample_event
from litestar.testing import TestClient
from pydantic import BaseModel, SecretStr

from .conftest import NoSettings, System, registry_with
from .test_dashboard import Dash

PUBLIC = "https://hub.example.com"
SECRET = "signing-secret-of-the-account"
PHONE = "+14155550123"
CALLBACK_URLS: list[str] = []


class SignerCredentials(BaseModel):
    secret: SecretStr


def sign(secret: str, url: str, body: bytes) -> str:
    return hmac.new(secret.encode(), url.encode() + body, hashlib.sha256).hexdigest()


def send(ctx: ActionContext) -> Result:
    """Sends nothing; the "provider" id is the event's, so each account's is its own."""
    CALLBACK_URLS.append(ctx.services.callback_url("signer") or "")
    return Result.ok(external_id=f"SM{ctx.event.id}")


def handle(request: CallbackRequest) -> CallbackAnswer:
    if request.credentials is None:
        raise CallbackRefused("the signer integration is not connected")
    expected = sign(request.credentials.secret.get_secret_value(), request.url, request.body)
    if not hmac.compare_digest(request.headers.get("X-Signature", ""), expected):
        raise CallbackRefused("bad signature")
    form = request.form
    if "Body" in form:  # an inbound reply
        word = form["Body"].strip().upper()
        receipt = form.get("MessageSid")
        if word == "STOP":
            return CallbackAnswer(
                suppress={form["From"]: "replied STOP"}, body="<Response/>", receipt=receipt
            )
        if word == "START":
            return CallbackAnswer(unsuppress=[form["From"]], body="<Response/>", receipt=receipt)
        return CallbackAnswer()
    update = DeliveryUpdate(
        form["MessageSid"], form["MessageStatus"], form.get("ErrorCode"), form.get("ErrorText")
    )
    return CallbackAnswer(updates=[update])


def registry() -> plugins.Registry:
    reg = registry_with(
        ActionType(
            "signer.send",
            "Send signed",
            NoSettings,
            send,
            integration="signer",
            credentials=SignerCredentials,
        )
    )
    reg.callbacks["signer"] = Callback(
        "signer", handle, integration="signer", credentials=SignerCredentials
    )
    return reg


def auth(acc: NewAccount) -> dict[str, str]:
    return {"Authorization": f"Bearer {acc.api_key}"}


class Provider:
    """Posts callbacks the way a provider does: a form, signed over the URL and the body."""

    def __init__(self, client: TestClient[Any], url: str, secret: str = SECRET) -> None:
        self.client, self.url, self.secret = client, url, secret

    def post(
        self, fields: dict[str, str], secret: str | None = None, url: str | None = None
    ) -> Any:
        url = url or self.url
        body = urlencode(fields).encode()
        parts = urlsplit(url)
        return self.client.post(
            parts.path + (f"?{parts.query}" if parts.query else ""),
            content=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Signature": sign(secret or self.secret, url, body),
            },
        )


@pytest.fixture
def hub_api(
    make_system: Callable[..., System], allow_loopback: None
) -> Iterator[tuple[System, TestClient[Any]]]:
    system = make_system(registry=registry(), public_url=PUBLIC)
    system.start()
    with TestClient(create_app(system.hub)) as client:
        yield system, client


def sent_run(system: System, client: TestClient[Any], acc: NewAccount, event_id: str) -> str:
    """An account connected to the signer, a workflow of one step, a run of it that sent."""
    client.put("/v1/integrations/signer", json={"secret": SECRET}, headers=auth(acc))
    system.workflow(acc, [{"action": "signer.send"}])
    run_id = system.hub.emit(sample_event(id=event_id), account_id=acc.id).run_ids[0]
    run = system.wait_run(acc, run_id)
    assert run.status == "succeeded"
    return run_id


def attempt(client: TestClient[Any], acc: NewAccount, run_id: str) -> dict[str, Any]:
    answer = client.get(f"/v1/runs/{run_id}", headers=auth(acc))
    assert answer.status_code == 200
    found: dict[str, Any] = answer.json()["steps"][0]["attempt_log"][0]
    return found


def test_statuses_move_forward_only_and_forgeries_change_nothing(
    hub_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = hub_api
    acc = system.account()
    CALLBACK_URLS.clear()
    run_id = sent_run(system, client, acc, "evt_cb")
    [url] = CALLBACK_URLS
    assert url.startswith(f"{PUBLIC}/v1/callbacks/signer/{acc.id}.")
    first = attempt(client, acc, run_id)
    sid = first["external_id"]
    assert first["delivery_status"] == "accepted"
    provider = Provider(client, url)

    forged = provider.post({"MessageSid": sid, "MessageStatus": "delivered"}, secret="guess")
    assert forged.status_code == 403
    assert forged.json()["error"] == "callback_refused"
    assert attempt(client, acc, run_id)["delivery_status"] == "accepted"

    assert provider.post({"MessageSid": sid, "MessageStatus": "sent"}).status_code == 200
    assert attempt(client, acc, run_id)["delivery_status"] == "sent"
    assert provider.post({"MessageSid": sid, "MessageStatus": "delivered"}).status_code == 200
    delivered = attempt(client, acc, run_id)
    assert delivered["delivery_status"] == "delivered"
    assert delivered["delivery_updated_at"] is not None
    dash = Dash(client)
    dash.sign_in(acc.api_key)
    assert (
        'step-delivery" title="What the provider reported">Delivered<'
        in dash.get(f"/runs/{run_id}").text
    )

    # Replayed, late, or a different final word: nothing changes, not even the time.
    for status in ("delivered", "sent", "accepted", "undelivered"):
        fields = {"MessageSid": sid, "MessageStatus": status, "ErrorCode": "30003"}
        assert provider.post(fields).status_code == 200
    assert attempt(client, acc, run_id) == delivered


def test_an_undelivered_message_keeps_the_providers_code(
    hub_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = hub_api
    acc = system.account()
    CALLBACK_URLS.clear()
    run_id = sent_run(system, client, acc, "evt_undelivered")
    sid = attempt(client, acc, run_id)["external_id"]
    fields = {
        "MessageSid": sid,
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
        "ErrorText": "unreachable handset",
    }
    assert Provider(client, CALLBACK_URLS[0]).post(fields).status_code == 200
    got = attempt(client, acc, run_id)
    assert (got["delivery_status"], got["delivery_error_code"], got["delivery_error"]) == (
        "undelivered",
        "30003",
        "unreachable handset",
    )

    # The run page and the booking's timeline say so, in words and in the API.
    dash = Dash(client)
    dash.sign_in(acc.api_key)
    shown = dash.get(f"/runs/{run_id}").text
    assert "Undelivered: 30003 unreachable handset" in shown
    timeline = client.get("/v1/bookings/bk_sample/timeline", headers=auth(acc)).json()
    [run] = [e["run"] for e in timeline["entries"] if e["kind"] == "run"]
    assert run["steps"][0]["attempt_log"][0]["delivery_status"] == "undelivered"
    assert "Undelivered: 30003 unreachable handset" in dash.get("/bookings/bk_sample").text


def test_another_accounts_message_and_unknown_urls(
    hub_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = hub_api
    mine, theirs = system.account(), system.account()
    CALLBACK_URLS.clear()
    sent_run(system, client, mine, "evt_mine")
    their_run = sent_run(system, client, theirs, "evt_theirs")
    my_url = CALLBACK_URLS[0]
    their_sid = attempt(client, theirs, their_run)["external_id"]

    # Signed right for my account, naming their message: theirs is not touched.
    answer = Provider(client, my_url).post({"MessageSid": their_sid, "MessageStatus": "delivered"})
    assert answer.status_code == 200
    assert attempt(client, theirs, their_run)["delivery_status"] == "accepted"

    key = my_url.rsplit("/", 1)[1]
    for path in (
        f"/v1/callbacks/signer/{key}x",  # a key not made here
        f"/v1/callbacks/signer/{theirs.id}.{key.split('.')[1]}",  # my MAC, their id
        f"/v1/callbacks/nope/{key}",  # no such callback
        f"/v1/callbacks/signer/{key[:-1]}é",  # a MAC with a letter no MAC has
    ):
        missing = Provider(client, PUBLIC + path).post({"MessageSid": "x", "MessageStatus": "sent"})
        assert missing.status_code == 404, path
        assert missing.json()["error"] == "not_found"


def test_stop_and_start_replies_edit_the_suppression_list(
    hub_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = hub_api
    acc = system.account()
    CALLBACK_URLS.clear()
    sent_run(system, client, acc, "evt_stop")
    provider = Provider(client, CALLBACK_URLS[0])

    stop = provider.post({"From": "+1 (415) 555-0123", "Body": "stop"})
    assert stop.status_code == 200 and stop.text == "<Response/>"
    [entry] = client.get("/v1/suppressions", headers=auth(acc)).json()["items"]
    assert (entry["address"], entry["source"], entry["reason"]) == (
        PHONE,
        "sms_stop",
        "replied STOP",
    )
    assert provider.post({"From": PHONE, "Body": "START"}).status_code == 200
    assert client.get("/v1/suppressions", headers=auth(acc)).json()["items"] == []

    forged = provider.post({"From": PHONE, "Body": "STOP"}, secret="guess")
    assert forged.status_code == 403
    assert client.get("/v1/suppressions", headers=auth(acc)).json()["items"] == []


def test_a_reply_delivered_again_does_not_undo_a_later_one(
    hub_api: tuple[System, TestClient[Any]],
) -> None:
    """A START redelivered (or replayed by whoever captured it) after a STOP is the same
    message: the number stays opted out."""
    system, client = hub_api
    acc = system.account()
    CALLBACK_URLS.clear()
    sent_run(system, client, acc, "evt_replay")
    provider = Provider(client, CALLBACK_URLS[0])
    start = {"MessageSid": "SM_start", "From": PHONE, "Body": "START"}

    for fields in (start, {"MessageSid": "SM_stop", "From": PHONE, "Body": "STOP"}, start):
        assert provider.post(fields).status_code == 200
    [entry] = client.get("/v1/suppressions", headers=auth(acc)).json()["items"]
    assert entry["address"] == PHONE
    # A new START, another message, does lift it.
    assert provider.post({**start, "MessageSid": "SM_start_2"}).status_code == 200
    assert client.get("/v1/suppressions", headers=auth(acc)).json()["items"] == []


def test_oversized_callbacks_are_refused(hub_api: tuple[System, TestClient[Any]]) -> None:
    system, client = hub_api
    acc = system.account()
    CALLBACK_URLS.clear()
    sent_run(system, client, acc, "evt_big")
    provider = Provider(client, CALLBACK_URLS[0])
    many = provider.post({f"f{i}": "x" for i in range(101)})
    assert many.status_code == 413 and many.json()["error"] == "too_large"
    big = provider.post({"MessageSid": "x", "Body": "x" * (system.hub.settings.max_event_bytes)})
    assert big.status_code == 413
