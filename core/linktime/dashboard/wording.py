"""What runs, steps and their errors say to a person reading the dashboard.

The stored error codes and texts are for developers and operators (the API's run JSON keeps
them unchanged); here each becomes a sentence. An operator configuration error (a ``LINKTIME_…``
setting missing or invalid on the server, ``errorcodes``) is said without its detail: the user
cannot fix it, and the setting's name means nothing to them; the engine logs it for the operator.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from ..engine import Hub
from ..errorcodes import is_operator_error
from ..statuses import DeliveryStatus, RunStatus, StepStatus
from .app import offset_text, sentence


@dataclass(frozen=True)
class Channel:
    setup: str  # what is "not set up on this server"
    peer: str  # who answered, or did not


CHANNELS = {
    "email": Channel("Email sending", "The mail server"),
    "sms": Channel("SMS sending", "The SMS provider"),
    "slack": Channel("Slack messaging", "Slack"),
    "webhook": Channel("Webhook delivery", "The receiver"),
    "voice": Channel("Voice calling", "The voice provider"),
}

SETTINGS = "/settings/integrations"
OPT_OUTS = "/settings/opt-outs"


@dataclass(frozen=True)
class Problem:
    """An error in words: ``sentence`` for everyone, ``detail`` (the stored error, shown folded)
    only when it is the user's to read, ``fix`` a link (text, href) to what mends it."""

    sentence: str
    detail: str | None = None
    fix: tuple[str, str] | None = None


def _channel(hub: Hub, action: str) -> Channel:
    found = hub.registry.actions.get(action)
    if found is not None and found.capability in CHANNELS:
        return CHANNELS[found.capability]
    title = found.title if found is not None else action
    return Channel(f"The “{title}” action", "The receiver")


def problem(
    hub: Hub, action: str, code: str | None, error: str | None, http_status: int | None
) -> Problem | None:
    """What went wrong with one attempt or step, or None when nothing did."""
    if code is None and error is None:
        return None
    channel = _channel(hub, action)
    found = hub.registry.actions.get(action)
    if is_operator_error(found, code):
        return Problem(
            f"{channel.setup} is not set up on this server — contact your administrator."
        )
    integration = (found.integration if found else None) or "This integration"
    settings = f"{SETTINGS}#{found.integration}" if found and found.integration else SETTINGS
    if http_status is None and code and re.fullmatch(r"http_\d{3}", code):
        http_status = int(code.removeprefix("http_"))  # a step keeps the code, not the status
    said = _said(channel, code or "", http_status)
    fix = None
    if code == "not_connected":
        said = f"{integration.capitalize()} is not connected to this account."
        fix = ("Connect it in Settings", settings)
    elif code == "bad_credentials":
        said = f"The {integration} settings saved for this account are no longer valid."
        fix = ("Update them in Settings", settings)
    elif code == "opted_out":
        fix = ("See the opt-outs", OPT_OUTS)
    elif code == StepStatus.BLOCKED_BY_PLAN:
        said = "The account's plan did not include this action when it ran."
        fix = ("See what your plan includes", "/account")
    return Problem(said, detail=error, fix=fix)


def _said(channel: Channel, code: str, http_status: int | None) -> str:
    peer = channel.peer
    fixed = {
        "template_budget": "The message took too much work to fill in for this booking (too "
        "many repeats or too much text); simplify its template.",
        "template_error": "The message could not be filled in for this booking; check the "
        "workflow's message template.",
        "no_recipient": "There was nobody to send it to for this booking.",
        "bad_settings": "This step's settings are no longer valid; open the workflow, correct "
        "them and save it.",
        "action_not_installed": "This action is no longer installed on this server — contact "
        "your administrator.",
        "timeout": f"{peer} did not answer in time.",
        "connection_error": f"Could not connect to {peer[:1].lower() + peer[1:]}.",
        "dns_error": "The receiver's address could not be found; check the URL.",
        "ssrf_refused": "The address points into a private network, which this server does not "
        "call; use a public URL.",
        "worker_lost": "The server stopped during this attempt.",
        "bad_response": f"{peer} gave an answer that could not be read.",
        "slack_ratelimited": "Slack asked to slow down.",
        "not_supported": f"{peer} does not support this message (for example, an address with "
        "non-Latin letters).",
        "opted_out": "Not sent: the recipient is on this account's opt-out list.",
    }
    if code in fixed:
        return fixed[code]
    if http_status is not None and http_status >= 300:
        return _http(peer, http_status)
    for prefix, who in (("smtp_", "The mail server"), ("twilio_", "Twilio"), ("slack_", "Slack")):
        if code.startswith(prefix):
            return f"{who} refused it ({code.removeprefix(prefix).replace('_', ' ')})."
    return "It did not go through."


def _http(peer: str, status: int) -> str:
    try:
        answered = f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        answered = f"HTTP {status}"
    if status < 400:
        return f"{peer} answered with a redirect ({answered}), which is not followed; use the "
        "final address."
    if status == 429:
        return f"{peer} asked to slow down ({answered})."
    if status < 500:
        return f"{peer} refused the request ({answered})."
    return f"{peer} had a problem of its own ({answered})."


# A run's and a step's status in words; a status with a moment reads "Retrying at 14:05".
RUN_STATUS = {
    RunStatus.SCHEDULED: "Scheduled for",
    RunStatus.QUEUED: "About to run",
    RunStatus.RUNNING: "Running",
    RunStatus.WAITING: "Retrying at",
    RunStatus.SUCCEEDED: "Succeeded",
    RunStatus.FAILED: "Failed",
    RunStatus.CANCELLED: "Cancelled",
    RunStatus.SKIPPED: "Skipped",
}
# The status filter's choices.
RUN_STATUS_CHOICE = {
    **RUN_STATUS,
    RunStatus.SCHEDULED: "Scheduled",
    RunStatus.WAITING: "Waiting (to retry, or after a delay)",
}
STEP_STATUS = {
    StepStatus.PENDING: "Not started",
    StepStatus.RUNNING: "Running",
    StepStatus.SUCCEEDED: "Succeeded",
    StepStatus.FAILED: "Failed",
    StepStatus.SKIPPED: "Not run",
    StepStatus.BLOCKED_BY_PLAN: "Not on the plan",
    StepStatus.OPTED_OUT: "Opted out",
    StepStatus.WAITING: "Waiting",
    StepStatus.STOPPED: "Stopped the run",
}
ATTEMPT_STATUS = {
    "succeeded": "Succeeded",
    "retrying": "Failed, tried again",
    "failed": "Failed",
    "blocked_by_plan": "Not on the plan",
    "opted_out": "Not sent: opted out",
    "waiting": "Waiting",
    "stopped": "Stopped the run",
    "skipped": "Skipped",
}
# What became of a message once its provider took it (the provider's callbacks tell).
DELIVERY_STATUS: dict[str, str] = {
    DeliveryStatus.ACCEPTED: "Accepted by the provider",
    DeliveryStatus.SENT: "Sent",
    DeliveryStatus.DELIVERED: "Delivered",
    DeliveryStatus.UNDELIVERED: "Undelivered",
    DeliveryStatus.FAILED: "Delivery failed",
    DeliveryStatus.OPTED_OUT: "Opted out",
}


def delivery_words(status: str | None, code: str | None, error: str | None) -> str | None:
    """ "Delivered", "Undelivered: 30003 unreachable handset", or None for an attempt that
    sent nothing."""
    if status is None:
        return None
    said = DELIVERY_STATUS.get(status, status)  # StrEnum keys find a stored string
    why = " ".join(part for part in (code, error) if part)
    return f"{said}: {why}" if why and status != DeliveryStatus.OPTED_OUT else said


def trigger_words(hub: Hub, trigger: str, offset: int | None) -> str:
    """ "Booking created", "1 hour before the meeting", "30 minutes after the meeting"."""
    found = hub.registry.triggers.get(trigger)
    if found is None:
        return f"{trigger} (no longer installed)"
    if found.kind != "time":
        return sentence(found.title.lower())
    where = "before the meeting" if found.direction < 0 else "after the meeting"
    if offset is None:  # the workflow was deleted: its offset is gone with it
        return sentence(f"{where} (the workflow was deleted)")
    if not offset:
        return "When the meeting starts" if found.direction < 0 else "When the meeting ends"
    return f"{offset_text(offset)} {where}"


def conditions_words(nodes: list[dict[str, Any]]) -> str:
    """Stored conditions as a line of text: ``booking.paid eq false; any of (host.name eq
    "Ada"; guests.count gt 0)``."""
    said = []
    for node in nodes:
        if "any" in node or "all" in node:
            group = "any" if "any" in node else "all"
            said.append(f"{group} of ({conditions_words(node[group])})")
        elif node.get("op") == "exists":
            said.append(f"{node['field']} {'exists' if node.get('value') else 'is missing'}")
        else:
            shown = json.dumps(node.get("value"), ensure_ascii=False)
            said.append(f"{node['field']} {node['op']} {shown}")
    return "; ".join(said)


def how_long(span: timedelta) -> str:
    """A span rounded to its largest unit: "3 days", "5 hours", "1 minute"."""
    minutes = max(1, math.ceil(span.total_seconds() / 60))
    for size in (60 * 24, 60):
        if minutes >= size:
            minutes = round(minutes / size) * size
            break
    return offset_text(minutes)
