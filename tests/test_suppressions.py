"""The account's suppression list: honoured by steps before sending (``ctx.services.opted_out``,
``Result.opted_out``), edited through /v1/suppressions and Settings → Opt-outs, and filled by
an email's one-click unsubscribe link."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from html import unescape
from typing import Any

import pytest
from linktime import services, suppressions
from linktime.accounts import NewAccount
from linktime.actions import ActionContext, ActionType, Result
from linktime.api import create_app
from linktime.testing import event_with
from litestar.testing import TestClient

from .conftest import NoSettings, System, registry_with
from .test_dashboard import Dash

PHONE = "+14155550123"
SENT: list[str] = []


def careful_send(ctx: ActionContext) -> Result:
    """Sends to the invitee's phone unless it opted out; the number +15005550009 is one the
    "provider" refuses as opted out (Twilio's 21610)."""
    phone = ctx.event.booking.invitee.phone if ctx.event.booking.invitee else None
    assert phone is not None
    why = ctx.services.opted_out(phone)
    if why is not None:
        return Result.opted_out(why)
    if phone == "+15005550009":
        return Result.opted_out(
            "the number replied STOP earlier", error_code="21610", suppress=phone
        )
    SENT.append(phone)
    return Result.ok(external_id=f"SM{len(SENT)}")


def after(ctx: ActionContext) -> Result:
    SENT.append("after")
    return Result.ok()


def auth(acc: NewAccount) -> dict[str, str]:
    return {"Authorization": f"Bearer {acc.api_key}"}


@pytest.fixture
def hub_api(
    make_system: Callable[..., System], allow_loopback: None
) -> Iterator[tuple[System, TestClient[Any]]]:
    registry = registry_with(
        ActionType("careful.send", "Send carefully", NoSettings, careful_send),
        ActionType("then.after", "Afterwards", NoSettings, after),
    )
    system = make_system(registry=registry, public_url="https://hub.example.com")
    system.start()
    with TestClient(create_app(system.hub)) as client:
        yield system, client


def listed(client: TestClient[Any], acc: NewAccount, **params: Any) -> list[dict[str, Any]]:
    answer = client.get("/v1/suppressions", params=params, headers=auth(acc))
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def test_a_suppressed_recipient_is_not_sent_to_and_the_run_goes_on(
    hub_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = hub_api
    acc = system.account()
    system.workflow(acc, [{"action": "careful.send"}, {"action": "then.after"}])
    added = client.post(
        "/v1/suppressions",
        json={"address": "+1 415 555 0123", "reason": "asked"},
        headers=auth(acc),
    )
    assert added.status_code == 201
    SENT.clear()

    event = event_with(invitee={"phone": PHONE})
    run = system.wait_run(acc, system.hub.emit(event, account_id=acc.id).run_ids[0])

    assert run.status == "succeeded"
    assert [s.status for s in run.steps] == ["opted_out", "succeeded"]
    assert SENT == ["after"]
    shown = client.get(f"/v1/runs/{run.id}", headers=auth(acc)).json()
    first = shown["steps"][0]["attempt_log"][0]
    assert first["status"] == "opted_out" and first["delivery_status"] == "opted_out"
    assert first["error"] == f"{PHONE} is on the suppression list: asked"
    dash = Dash(client)
    dash.sign_in(acc.api_key)
    page = dash.get(f"/runs/{run.id}").text
    assert "Opted out" in page and "Not sent: the recipient is on this account" in page
    assert 'href="/settings/opt-outs">See the opt-outs' in page


def test_an_opt_out_the_provider_reports_goes_on_the_list(
    hub_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = hub_api
    acc = system.account()
    system.workflow(acc, [{"action": "careful.send"}, {"action": "then.after"}])
    SENT.clear()
    event = event_with(invitee={"phone": "+15005550009"})
    run = system.wait_run(acc, system.hub.emit(event, account_id=acc.id).run_ids[0])
    assert [s.status for s in run.steps] == ["opted_out", "succeeded"]
    [entry] = listed(client, acc)
    assert (entry["address"], entry["source"]) == ("+15005550009", "provider")
    assert entry["reason"] == "the number replied STOP earlier"


def test_the_list_through_the_api(hub_api: tuple[System, TestClient[Any]]) -> None:
    system, client = hub_api
    acc, other = system.account(), system.account()

    first = client.post("/v1/suppressions", json={"address": "Ann@Example.com"}, headers=auth(acc))
    assert first.status_code == 201
    assert first.json()["address"] == "ann@example.com"
    assert first.json()["source"] == "manual"
    again = client.post(
        "/v1/suppressions", json={"address": "ann@example.COM", "reason": "x"}, headers=auth(acc)
    )
    assert again.status_code == 200 and again.json() == first.json()  # kept as first added
    for i in range(3):
        client.post("/v1/suppressions", json={"address": f"+1415555010{i}"}, headers=auth(acc))

    for body, field in (
        ({"address": "not an address"}, "address"),
        ({"address": "+12"}, "address"),
        ({}, "address"),
        ({"address": "a@b.co", "reason": "x" * 501}, "reason"),
        ({"address": "a@b.co", "colour": "red"}, "colour"),
    ):
        bad = client.post("/v1/suppressions", json=body, headers=auth(acc))
        assert bad.status_code == 422, body
        assert [f["field"] for f in bad.json()["fields"]] == [field], bad.json()

    page1 = client.get("/v1/suppressions", params={"limit": 3}, headers=auth(acc)).json()
    assert [e["address"] for e in page1["items"]] == [
        "+14155550102",
        "+14155550101",
        "+14155550100",
    ]
    page2 = client.get(
        "/v1/suppressions", params={"limit": 3, "cursor": page1["next_cursor"]}, headers=auth(acc)
    ).json()
    assert [e["address"] for e in page2["items"]] == ["ann@example.com"]
    assert page2["next_cursor"] is None
    assert [e["address"] for e in listed(client, acc, q="EXAMPLE")] == ["ann@example.com"]
    bad_cursor = client.get("/v1/suppressions", params={"cursor": "nope"}, headers=auth(acc))
    assert bad_cursor.status_code == 422 and bad_cursor.json()["fields"][0]["field"] == "cursor"

    # Another account sees none of it and cannot remove it.
    assert listed(client, other) == []
    gone = client.delete("/v1/suppressions/ann@example.com", headers=auth(other))
    assert gone.status_code == 404
    assert client.delete("/v1/suppressions/Ann@example.com", headers=auth(acc)).status_code == 204
    assert client.delete("/v1/suppressions/ann@example.com", headers=auth(acc)).status_code == 404
    assert client.delete("/v1/suppressions/%2B14155550100", headers=auth(acc)).status_code == 204
    assert len(listed(client, acc)) == 2
    assert client.get("/v1/suppressions").status_code == 401


def test_unsubscribe_link_asks_first_and_one_click_adds(
    hub_api: tuple[System, TestClient[Any]],
) -> None:
    system, client = hub_api
    acc = system.account()
    token = services.unsubscribe_token(system.hub.secret_key(), acc.id, "Pat@Example.com")

    page = client.get(f"/v1/unsubscribe/{token}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = unescape(re.sub(r"<[^>]+>", "", page.text))
    assert "Unsubscribe pat@example.com from test's emails?" in text
    assert '<form method="post">' in page.text
    assert listed(client, acc) == []  # a GET (a mail scanner's) changes nothing

    done = client.post(
        f"/v1/unsubscribe/{token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200
    assert "pat@example.com will get no more emails from test" in unescape(
        re.sub(r"<[^>]+>", "", done.text)
    )
    [entry] = listed(client, acc)
    assert (entry["address"], entry["source"]) == ("pat@example.com", "unsubscribe")
    assert client.post(f"/v1/unsubscribe/{token}").status_code == 200  # again: still fine
    assert len(listed(client, acc)) == 1

    for bad in (token[:-2] + "xx", "nothing", f"{token}.x", token[:-1] + "é"):
        assert client.get(f"/v1/unsubscribe/{bad}").status_code == 404
        assert client.post(f"/v1/unsubscribe/{bad}").status_code == 404


def test_opt_outs_page_adds_and_removes(hub_api: tuple[System, TestClient[Any]]) -> None:
    system, client = hub_api
    acc = system.account()
    client.post("/v1/suppressions", json={"address": PHONE}, headers=auth(acc))
    token = services.unsubscribe_token(system.hub.secret_key(), acc.id, "pat@example.com")
    client.post(f"/v1/unsubscribe/{token}")
    dash = Dash(client)
    dash.sign_in(acc.api_key)

    shown = dash.get("/settings/opt-outs")
    assert shown.status_code == 200
    assert 'aria-current="page">Opt-outs' in shown.text
    assert "Unsubscribed by email" in shown.text and "Added by you" in shown.text

    bad = dash.post("/settings/opt-outs", {"address": "nobody", "reason": ""})
    assert bad.status_code == 422
    assert "The address was not added" in bad.text and 'aria-invalid="true"' in bad.text
    empty = dash.post("/settings/opt-outs", {"address": " ", "reason": ""})
    assert empty.status_code == 422 and "This is required" in empty.text
    assert (
        dash.post("/settings/opt-outs", {"address": "x@example.com"}, csrf=False).status_code == 403
    )

    added = dash.post("/settings/opt-outs", {"address": "Sam@Example.com", "reason": "rang us"})
    assert added.status_code == 303
    after = dash.get("/settings/opt-outs")
    assert "sam@example.com is on the list" in after.text and "rang us" in after.text
    assert [e["address"] for e in listed(client, acc)] == [
        "sam@example.com",
        "pat@example.com",
        PHONE,
    ]

    removed = dash.post("/settings/opt-outs/remove", {"address": PHONE})
    assert removed.status_code == 303
    assert f"{PHONE} is off the list" in dash.get("/settings/opt-outs").text
    assert PHONE not in [e["address"] for e in listed(client, acc)]
    found = dash.get("/settings/opt-outs", params={"q": "sam"})
    assert "sam@example.com" in found.text and "pat@example.com" not in found.text


def test_addresses_are_kept_as_channels_send_to_them(
    hub_api: tuple[System, TestClient[Any]],
) -> None:
    """A number written the way people write it is the number sms.send dials; a search finds
    it written either way; two mailboxes that differ only by ß and ss stay two."""
    system, client = hub_api
    acc = system.account()
    for written, kept in (
        ("+44 (0)20 7946 0958", "+442079460958"),
        ("whatsapp:+1 415-555-0177", "+14155550177"),
        ("Straße@Example.com", "straße@example.com"),
    ):
        added = client.post("/v1/suppressions", json={"address": written}, headers=auth(acc))
        assert (added.status_code, added.json()["address"]) == (201, kept), written
    with system.hub.db.connect() as conn:
        assert suppressions.lookup(conn, acc.id, "+442079460958") is not None
        assert suppressions.lookup(conn, acc.id, "strasse@example.com") is None

    for q in ("415 555", "+1 415-555-01", "0177", "STRASSE", "straße"):
        found = client.get("/v1/suppressions", params={"q": q}, headers=auth(acc)).json()
        expected = [] if q == "STRASSE" else [q]
        assert len(found["items"]) == len(expected), (q, found)
