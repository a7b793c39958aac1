"""What a plugin registers to hear back from a provider: delivery reports and inbound messages.

A ``Callback`` is served at ``POST /v1/callbacks/{name}/{account key}``; the account key (from
``ctx.services.callback_url(name)``) says whose it is without being an API key, and the
plugin's ``handle`` verifies the provider's own signature with the account's integration
settings. What it answers (delivery updates, opt-outs) the core stores in one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .suppressions import SMS_STOP

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


class CallbackRefused(Exception):
    """The request is not the provider's (a bad signature): 403, nothing stored."""


@dataclass(frozen=True)
class CallbackRequest:
    account_id: str
    # The URL the provider called, as it was handed out (``LINKTIME_PUBLIC_URL`` + path and
    # query string): what a signature over the URL covers, whatever proxy is in front.
    url: str
    headers: Mapping[str, str]
    # A form post's fields (one value each); empty for a JSON body.
    form: Mapping[str, str]
    body: bytes
    # The account's integration settings, opened with the callback's ``credentials`` model;
    # None when it has not connected the integration.
    credentials: Any


@dataclass(frozen=True)
class DeliveryUpdate:
    """What a provider reported about one message: ``external_id`` is what the step's
    ``Result.ok`` returned (a Twilio SID); ``status`` one of ``statuses.DeliveryStatus``."""

    external_id: str
    status: str
    error_code: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class CallbackAnswer:
    updates: list[DeliveryUpdate] = field(default_factory=list)
    # Addresses (E.164 numbers, email addresses) to add to the account's suppression list,
    # each with the reason shown beside it; and to take off it (an SMS "START").
    suppress: Mapping[str, str] = field(default_factory=dict)
    unsuppress: list[str] = field(default_factory=list)
    # Why ``suppress``'s addresses go on the list (``suppressions.SOURCES``): a reply STOP, or
    # ``suppressions.PROVIDER`` when the provider reported the opt-out (Twilio's 21610).
    suppress_source: str = SMS_STOP
    # The provider's id of this report (an inbound message's SID; a status report's SID and
    # status): its opt-outs and opt-ins are applied once, so a report delivered again, or
    # replayed by whoever captured it, cannot undo a later STOP or START.
    receipt: str | None = None
    # What the provider gets back (Twilio expects TwiML for an inbound message).
    body: str = ""
    media_type: str = "text/plain"


@dataclass(frozen=True)
class Callback:
    """``name`` is the URL segment (``"twilio"``); ``integration`` the account integration
    whose settings, validated by ``credentials``, reach ``handle``."""

    name: str
    handle: Callable[[CallbackRequest], CallbackAnswer]
    integration: str | None = None
    credentials: type[BaseModel] | None = None
    description: str = ""

    def validate(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"callback name {self.name!r} must be a lower-case slug")
        if (self.credentials is None) != (self.integration is None):
            raise ValueError(f"callback {self.name}: credentials and integration go together")
        if not callable(self.handle):
            raise ValueError(f"callback {self.name}: handle must be callable")
