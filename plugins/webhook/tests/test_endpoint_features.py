"""Svix-like behaviour of webhook.call on its own: a 2xx is "delivered", a rotated secret signs
beside the new one for its window, and a receiver can stop the retries of one message. Driven
through ``linktime.testing``'s fixtures only (``run_action``, ``http_receiver``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import linktime_webhook
import pytest
from linktime import plugins
from linktime.actions import Outcome
from linktime.testing import HttpReceiver, Reply, RunAction
from standardwebhooks import Webhook, WebhookVerificationError

OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def rotated(url: str, until: datetime) -> tuple[dict[str, object], str]:
    """Step settings just rotated away from OLD (the old one valid until ``until``), and the
    new secret."""
    before = linktime_webhook.WebhookStepSettings.model_validate({"url": url, "secret": OLD})
    after = linktime_webhook.rotate_secret(before, until)
    new = after.secret.get_secret_value()
    assert new != OLD and new.startswith("whsec_")
    return {"url": url, "secret": new, "previous_secret": OLD, "previous_secret_until": until}, new


def test_a_2xx_is_delivered(run_action: RunAction, http_receiver: HttpReceiver) -> None:
    result = run_action("webhook.call", {"url": http_receiver.url + "/hook", "secret": OLD})
    assert result.outcome is Outcome.SUCCEEDED
    assert result.delivery_status == "delivered"


def test_the_endpoint_is_the_step_s_url() -> None:
    action = plugins.load().action("webhook.call")
    assert action.endpoint is not None and action.rotate_secret is not None
    settings = action.settings.model_validate({"url": "https://hooks.example.com/in?a=1"})
    assert action.endpoint(settings) == "https://hooks.example.com/in?a=1"


def test_within_the_window_both_secrets_sign(
    run_action: RunAction, http_receiver: HttpReceiver
) -> None:
    settings, new = rotated(http_receiver.url + "/hook", datetime.now(UTC) + timedelta(hours=24))
    run_action("webhook.call", settings)
    [req] = http_receiver.wait_for(1)
    assert len(req.headers["webhook-signature"].split(" ")) == 2
    # Each receiver verifies with the one secret it knows: old and new both pass.
    assert Webhook(OLD).verify(req.body, req.headers)["type"] == "booking.created"
    assert Webhook(new).verify(req.body, req.headers)["type"] == "booking.created"


def test_after_the_window_only_the_new_secret_signs(
    run_action: RunAction, http_receiver: HttpReceiver
) -> None:
    settings, new = rotated(http_receiver.url + "/hook", datetime.now(UTC) - timedelta(seconds=1))
    run_action("webhook.call", settings)
    [req] = http_receiver.wait_for(1)
    assert req.headers["webhook-signature"].count("v1,") == 1
    Webhook(new).verify(req.body, req.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(req.body, req.headers)


def test_a_previous_secret_without_an_end_does_not_sign() -> None:
    settings = linktime_webhook.WebhookStepSettings.model_validate(
        {"url": "https://hooks.example.com/", "previous_secret": OLD}
    )
    assert settings.previous_secret is None


def test_the_abort_header_makes_a_retry_a_permanent_failure(
    run_action: RunAction, http_receiver: HttpReceiver
) -> None:
    http_receiver.script("/hook", Reply(503, "busy", headers={"Webhook-Delivery": "abort-message"}))
    result = run_action("webhook.call", {"url": http_receiver.url + "/hook", "secret": OLD})
    assert result.outcome is Outcome.FAILED
    assert result.error_code == "aborted_by_receiver"
    assert result.http_status == 503
    assert result.error is not None and "webhook-delivery: abort-message" in result.error


def test_without_the_header_a_503_retries(
    run_action: RunAction, http_receiver: HttpReceiver
) -> None:
    http_receiver.script("/hook", Reply(503, "busy"))
    result = run_action("webhook.call", {"url": http_receiver.url + "/hook", "secret": OLD})
    assert (result.outcome, result.error_code) == (Outcome.RETRY, "http_503")


def test_the_abort_header_changes_nothing_for_a_success(
    run_action: RunAction, http_receiver: HttpReceiver
) -> None:
    http_receiver.script("/hook", Reply(200, headers={"webhook-delivery": "abort-message"}))
    result = run_action("webhook.call", {"url": http_receiver.url + "/hook", "secret": OLD})
    assert result.outcome is Outcome.SUCCEEDED
