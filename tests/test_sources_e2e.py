"""Booking sources end to end, with every plugin installed: a running system (PostgreSQL, Redis,
an in-process worker and the scheduler) served over HTTP on loopback, the providers' webhooks
posted to the account's inbound URLs signed as the providers sign them, and the workflows they
start delivering to the loopback peers of ``test_channels_e2e``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from linktime.testing_hub import LinktimeServer, serve

from .conftest import TERMINAL, System
from .test_channels_e2e import Peers
from .test_channels_e2e import peers as peers  # the loopback peers (fixture)

# The endpoint secret Stripe's Dashboard shows for the webhook (the user pastes it in).
STRIPE_SECRET = "whsec_9c1f3e5a7b2d4f6e8a0c1b3d5f7e9a2c"


@pytest.fixture
def served(
    make_system: Callable[..., System], allow_loopback: None, peers: Peers
) -> Iterator[LinktimeServer]:
    """The running system's API on a loopback port, as a business account with email
    connected."""
    system = make_system()
    system.start()
    with serve(system.hub) as server:  # type: ignore[arg-type]  # any Hub serves
        email = {"from_name": "Acme Bookings", "reply_to": "help@acme.example"}
        connected = server.http.put("/v1/integrations/email", json=email)
        assert connected.status_code == 200, connected.text
        yield server


def enable_template(server: LinktimeServer, title: str) -> str:
    """The template titled ``title`` made into a workflow and enabled, as a user does."""
    [name] = [t["name"] for t in server.get("/v1/templates") if t["title"] == title]
    created = server.http.post(f"/v1/templates/{name}/workflows")
    assert created.status_code == 201, created.text
    workflow_id: str = created.json()["id"]
    enabled = server.http.post(f"/v1/workflows/{workflow_id}/enable")
    assert enabled.status_code == 200, enabled.text
    return workflow_id


def finished_run(server: LinktimeServer, run_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (run := server.get(f"/v1/runs/{run_id}"))["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s")
        time.sleep(0.05)
    found: dict[str, Any] = run
    return found


def test_a_stripe_payment_for_a_calcom_booking_starts_the_payment_confirmation_template(
    served: LinktimeServer, peers: Peers
) -> None:
    workflow_id = enable_template(served, "Payment Confirmation")
    calcom = served.connect("calcom")
    stripe = served.connect("stripe", signing_secret=STRIPE_SECRET)
    now = datetime.now(UTC)

    # Grace books through Cal.com: the booking LinkTime knows from now on (no run yet).
    booked = served.hub.registry.sources["calcom"].sample(now)
    uid = booked["payload"]["uid"]
    answer = served.post_signed(calcom, booked)
    assert answer.status_code == 200, answer.text
    assert [e["runs"] for e in answer.json()["events"]] == [[]]

    # She pays through Stripe, the PaymentIntent naming the booking in its metadata.
    payment = served.hub.registry.sources["stripe"].sample(now)
    intent = payment["data"]["object"]
    intent.update(amount=4500, amount_received=4500, currency="eur")
    intent["metadata"] = {"booking_uid": uid}
    answer = served.post_signed(stripe, payment, secret=STRIPE_SECRET)
    assert answer.status_code == 200, answer.text
    [started] = answer.json()["events"]
    [run] = started["runs"]
    assert run["workflow_id"] == workflow_id

    assert finished_run(served, run["id"])["status"] == "succeeded"
    event = served.get(f"/v1/events/payment:{intent['id']}")
    assert (event["type"], event["source"], event["booking_uid"]) == (
        "payment.received",
        "stripe",
        uid,
    )
    assert [r["id"] for r in event["runs"]] == [run["id"]]
    [mail] = peers.smtp.delivered
    assert mail.rcpt_tos == ["grace@example.com"]
    assert mail.message["Subject"] == f"Payment received for {booked['payload']['title']}"
    text = mail.message.get_content()
    assert f"your payment of 45.00 EUR (reference {intent['id']})" in text, text


def test_one_payment_cal_com_and_stripe_both_report_starts_payment_confirmation_once(
    served: LinktimeServer, peers: Peers
) -> None:
    """Cal.com's BOOKING_PAID and Stripe's payment_intent.succeeded for the same PaymentIntent
    are one payment: the second report is a replay, one email goes out."""
    workflow_id = enable_template(served, "Payment Confirmation")
    calcom = served.connect("calcom")
    stripe = served.connect("stripe", signing_secret=STRIPE_SECRET)
    now = datetime.now(UTC)
    booked = served.hub.registry.sources["calcom"].sample(now)
    paid = {**booked, "triggerEvent": "BOOKING_PAID"}
    intent_id = "pi_3QcalcomAndStripe0000001"
    paid["payload"] = {
        **booked["payload"],
        "price": 4500,
        "currency": "EUR",
        "paymentId": 17,
        "metadata": {**booked["payload"]["metadata"], "externalId": intent_id},
    }
    payment = served.hub.registry.sources["stripe"].sample(now)
    intent = payment["data"]["object"]
    intent.update(id=intent_id, amount=4500, amount_received=4500, currency="eur")
    intent["metadata"] = {"booking_uid": booked["payload"]["uid"]}

    assert served.post_signed(calcom, booked).status_code == 200
    first = served.post_signed(calcom, paid)
    assert first.status_code == 200, first.text
    [reported] = first.json()["events"]
    [run] = reported["runs"]
    assert run["workflow_id"] == workflow_id
    second = served.post_signed(stripe, payment, secret=STRIPE_SECRET)
    assert second.status_code == 200, second.text
    [replayed] = second.json()["events"]
    assert replayed == reported  # the first answer, starting nothing new

    assert finished_run(served, run["id"])["status"] == "succeeded"
    event = served.get(f"/v1/events/payment:{intent_id}")
    assert (event["source"], [r["id"] for r in event["runs"]]) == ("calcom", [run["id"]])
    [delivery] = served.get(f"/v1/sources/{stripe['id']}/deliveries")
    assert delivery["events"][0]["replayed"] is True
    [mail] = peers.smtp.delivered
    assert mail.rcpt_tos == ["grace@example.com"]
