"""A stand-in for Slack on loopback: ``chat.postMessage`` and incoming webhooks, answering the
way Slack does, for tests driving the real slack-sdk clients (the plugin's own, and any other
that runs ``slack.post``).

For tests only (it imports pytest). Use ``FakeSlack`` on a ``linktime.testing.HttpReceiver``
and point the plugin at it (``LINKTIME_SLACK_API_BASE`` = ``fake.api_base``), or import the
fixture into a ``conftest.py``::

    from linktime_slack_testing import slack

    __all__ = ["slack"]  # fixtures

``slack`` is the stand-in, with the plugin's operator settings pointing at it. The bot token it
accepts is ``TOKEN``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from linktime.testing import HttpReceiver, Received, Reply

TOKEN = "xoxb-1111-2222-Zs3cr3tB0tT0ken"
WEBHOOK_PATH = "/services/T0001/B0001/Zx9s3cr3tWebhookPart"


def slack_json(data: dict[str, Any], status: int = 200, **headers: str) -> Reply:
    return Reply(status, json.dumps(data), {"Content-Type": "application/json", **headers})


@dataclass
class FakeSlack:
    """Web API errors come as HTTP 200 with ``{"ok": false, "error": …}``, as Slack sends them;
    incoming webhooks answer a bare code (``ok``, ``no_service``…) as text/html."""

    token: ClassVar[str] = TOKEN

    receiver: HttpReceiver
    # The channels the bot is a member of: name or id -> id.
    channels: dict[str, str] = field(
        default_factory=lambda: {"#sales": "C0SALES01", "C0SALES01": "C0SALES01"}
    )
    # Channels Slack refuses, with the error it gives for each.
    channel_errors: dict[str, str] = field(default_factory=dict)
    # Incoming webhooks: path -> (status, body). Unknown paths get 404 no_service.
    webhooks: dict[str, tuple[int, str]] = field(
        default_factory=lambda: {WEBHOOK_PATH: (200, "ok")}
    )
    posted: int = 0

    def __post_init__(self) -> None:
        self.receiver.handler = self.handle

    @property
    def api_base(self) -> str:
        return f"{self.receiver.url}/api/"

    def webhook_url(self, path: str = WEBHOOK_PATH) -> str:
        return self.receiver.url + path

    def handle(self, request: Received) -> Reply:
        if request.path == "/api/chat.postMessage":
            return self._post_message(request)
        status, body = self.webhooks.get(request.path, (404, "no_service"))
        return Reply(status, body, {"Content-Type": "text/html"})

    def _post_message(self, request: Received) -> Reply:
        auth = request.headers.get("authorization")
        if auth is None:
            return slack_json({"ok": False, "error": "not_authed"})
        if auth != f"Bearer {TOKEN}":
            return slack_json({"ok": False, "error": "invalid_auth"})
        if not request.headers.get("content-type", "").startswith("application/json"):
            return slack_json({"ok": False, "error": "invalid_form_data"})
        message = request.json()
        channel = message.get("channel", "")
        if channel in self.channel_errors:
            return slack_json({"ok": False, "error": self.channel_errors[channel]})
        if channel not in self.channels:
            return slack_json({"ok": False, "error": "channel_not_found"})
        self.posted += 1
        ts = f"{1764601200 + self.posted}.000100"
        posted = {k: message[k] for k in ("text", "blocks") if k in message}
        return slack_json(
            {
                "ok": True,
                "channel": self.channels[channel],
                "ts": ts,
                "message": {"type": "message", "user": "U0BOT", "ts": ts, **posted},
            }
        )

    def received(self) -> list[dict[str, Any]]:
        """The JSON bodies that reached Slack, in order."""
        return [r.json() for r in self.receiver.requests]


@pytest.fixture
def slack(http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> FakeSlack:
    fake = FakeSlack(http_receiver)
    monkeypatch.setenv("LINKTIME_SLACK_API_BASE", fake.api_base)
    monkeypatch.setenv(
        "LINKTIME_SLACK_ALLOWED_WEBHOOK_BASES",
        f"https://hooks.slack.com/,{http_receiver.url}/services/",
    )
    # Incoming webhooks go through linktime.http, whose guard refuses loopback unless allowed.
    monkeypatch.setenv("LINKTIME_HTTP_ALLOWED_NETWORKS", "127.0.0.0/8")
    return fake
