"""The stand-in Twilio (from linktime-twilio's ``linktime_twilio_testing``) taught WhatsApp's side
of the Messages API, a hub with a public URL, and clean operator settings."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from linktime.settings import Settings
from linktime.testing import HttpReceiver, Reply
from linktime.testing_hub import LinktimeHub
from linktime_twilio_testing import FakeTwilio, credentials, twilio_error

__all__ = ["credentials"]  # fixtures

PUBLIC_URL = "https://hub.example.com"


class WhatsAppTwilio(FakeTwilio):
    """Also answers as Twilio does for WhatsApp: To and From on the same channel (21910), and a
    content template (``ContentSid`` with ``ContentVariables``, a JSON object) sent without a
    ``Body``. A template message is recorded in ``sent`` with ``[HX…]`` as its body, and its
    content SID and variables in ``templates`` by message SID."""

    def __init__(self, receiver: HttpReceiver) -> None:
        super().__init__(receiver)
        self.templates: dict[str, tuple[str, dict[str, str]]] = {}

    def _message(self, form: dict[str, str], headers: Mapping[str, str]) -> Reply:
        to, sender = form.get("To", ""), form.get("From")
        if sender and to.startswith("whatsapp:") != sender.startswith("whatsapp:"):
            said = "Invalid From and To pair. From and To should be of the same channel"
            return twilio_error(400, 21910, said)
        template = form.get("ContentSid")
        if template is None:
            if "ContentVariables" in form:
                said = "A ContentSid must be specified if ContentVariables are provided."
                return twilio_error(400, 21654, said)
            return super()._message(form, headers)
        try:
            variables = json.loads(form.get("ContentVariables", "{}"))
        except ValueError:
            return twilio_error(400, 21656, "The ContentVariables Parameter is invalid.")
        if not isinstance(variables, dict):
            return twilio_error(400, 21656, "The ContentVariables Parameter is invalid.")
        # Everything else (sender, recipient, opt-outs) as for any message.
        reply = super()._message({**form, "Body": f"[{template}]"}, headers)
        if reply.status == 201:
            self.templates[json.loads(reply.body)["sid"]] = (template, variables)
        return reply


@pytest.fixture
def twilio(
    http_receiver: HttpReceiver, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WhatsAppTwilio]:
    """The stand-in Twilio, with the Twilio channels pointed at it."""
    monkeypatch.setenv("LINKTIME_TWILIO_API_BASE", http_receiver.url)
    yield WhatsAppTwilio(http_receiver)


@pytest.fixture
def public_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LinktimeHub]:
    """A hub whose operator set ``LINKTIME_PUBLIC_URL``: providers are asked for callbacks."""
    monkeypatch.setenv("LINKTIME_PUBLIC_URL", PUBLIC_URL)
    hub = LinktimeHub(Settings(data_dir=tmp_path, secret_key="test-secret"))
    hub.migrate()
    try:
        yield hub
    finally:
        hub.close()


@pytest.fixture(autouse=True)
def clean_operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from the defaults, whatever the shell exports."""
    for name in ("SUPPORTED_COUNTRIES", "TIMEOUT"):
        monkeypatch.delenv(f"LINKTIME_WHATSAPP_{name}", raising=False)
    for name in ("LINKTIME_TWILIO_API_BASE", "LINKTIME_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
