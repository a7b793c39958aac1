"""What plugins register: trigger, action and template types, and what an action returns."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from . import templating
from .conditions import Facts, Live
from .errors import FieldError
from .models import BookingEvent

if TYPE_CHECKING:
    import httpx

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
# Seconds one attempt of an action may take when its plugin does not say: half the default
# step lease, so a worker renews its lease well before a slow attempt could outlive it.
DEFAULT_ACTION_TIMEOUT = 30.0


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"
    # Not sent, and that is no failure: the recipient opted out; the run goes on.
    OPTED_OUT = "opted_out"
    # Not sent because of the account's plan (an action it lacks, credits used up): the step
    # ends blocked_by_plan; the run goes on only if the workflow says so.
    BLOCKED = "blocked"
    # Logic steps (delay, filter, a step's `when`), which third parties may return too:
    # park the run until a moment (a row with a due time, as a retry is; nothing sleeps)...
    WAIT = "wait"
    # ...end the run here, succeeded, with the reason...
    STOP = "stop"
    # ...or leave this step out (nothing sent) and go on.
    SKIP = "skip"


@dataclass(frozen=True)
class Result:
    """What one attempt of one step came to. Build it with ``ok``, ``retry`` or ``fail``."""

    outcome: Outcome
    external_id: str | None = None
    error: str | None = None
    error_code: str | None = None
    http_status: int | None = None
    retry_after: float | None = None
    response_excerpt: str | None = None
    # For a success: how far the message got, when the plugin knows more than "accepted"
    # (a webhook answered 2xx: "delivered"). One of ``statuses.DeliveryStatus``.
    delivery_status: str | None = None
    # For an opt-out the provider reported (Twilio's 21610): the address to add to the
    # account's suppression list, in the same transaction as the attempt.
    suppress: str | None = None
    # For a wait: the moment the step is taken up again (aware), and whether it is taken up
    # earlier when the booking moves.
    until: datetime | None = None
    follows_booking: bool = False

    @classmethod
    def ok(
        cls,
        external_id: str | None = None,
        *,
        http_status: int | None = None,
        response_excerpt: str | None = None,
        delivery_status: str | None = None,
    ) -> Result:
        return cls(
            Outcome.SUCCEEDED,
            external_id=external_id,
            http_status=http_status,
            response_excerpt=response_excerpt,
            delivery_status=delivery_status,
        )

    @classmethod
    def opted_out(
        cls,
        reason: str,
        *,
        error_code: str = "opted_out",
        suppress: str | None = None,
        http_status: int | None = None,
        response_excerpt: str | None = None,
    ) -> Result:
        """Not sent: the recipient opted out (``ctx.services.opted_out`` said so, or the
        provider did: pass the address as ``suppress`` to add it to the list)."""
        return cls(
            Outcome.OPTED_OUT,
            error=reason,
            error_code=error_code,
            suppress=suppress,
            http_status=http_status,
            response_excerpt=response_excerpt,
        )

    @classmethod
    def blocked(cls, error: str, *, error_code: str) -> Result:
        """Not sent because of the account's plan, e.g. ``sms_credits_exhausted``."""
        return cls(Outcome.BLOCKED, error=error, error_code=error_code)

    @classmethod
    def wait_until(cls, moment: datetime, reason: str, *, follows_booking: bool = False) -> Result:
        """Park the run until ``moment``: the engine stores it as the step's due time and lets
        the run go; the scheduler hands it back then, as it does a retry, and this step's
        ``execute`` is called again with ``ctx.waited_until`` set to it (return ``ok`` to go
        on, or wait again). A moment already past goes on at once. ``follows_booking``: the
        moment comes from the booking's time, so ``execute`` is also called again, early, when
        the booking is rescheduled (work it out again from ``ctx.services.booking_now``)."""
        if moment.tzinfo is None:
            raise ValueError("wait_until needs an aware datetime")
        until = moment.astimezone(UTC)
        return cls(Outcome.WAIT, error=reason, until=until, follows_booking=follows_booking)

    @classmethod
    def stop(cls, reason: str, *, error_code: str = "stopped") -> Result:
        """End the run here, succeeded: the later steps are skipped, ``reason`` says why."""
        return cls(Outcome.STOP, error=reason, error_code=error_code)

    @classmethod
    def skip(cls, reason: str, *, error_code: str = "condition_not_met") -> Result:
        """Leave this step out, nothing sent, and go on with the next."""
        return cls(Outcome.SKIP, error=reason, error_code=error_code)

    @classmethod
    def retry(
        cls,
        error: str,
        *,
        error_code: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        response_excerpt: str | None = None,
    ) -> Result:
        return cls(
            Outcome.RETRY,
            error=error,
            error_code=error_code,
            http_status=http_status,
            retry_after=retry_after,
            response_excerpt=response_excerpt,
        )

    @classmethod
    def fail(
        cls,
        error: str,
        *,
        error_code: str | None = None,
        http_status: int | None = None,
        response_excerpt: str | None = None,
    ) -> Result:
        return cls(
            Outcome.FAILED,
            error=error,
            error_code=error_code,
            http_status=http_status,
            response_excerpt=response_excerpt,
        )

    @classmethod
    def from_response(cls, response: httpx.Response, *, excerpt_bytes: int = 1024) -> Result:
        """What an HTTP answer comes to, with its status and the first ``excerpt_bytes`` of its
        body: 2xx succeeds; 408, 425, 429 and 5xx retry (after the ``Retry-After`` the answer
        gives, if any); a redirect fails, naming where it points (redirects are not followed:
        the step's URL should be the final address); any other status fails."""
        from .http import retry_after  # httpx is imported only by actions that make requests

        status = response.status_code
        excerpt = response.content[:excerpt_bytes].decode("utf-8", errors="replace") or None
        if 200 <= status < 300:
            return cls.ok(http_status=status, response_excerpt=excerpt)
        try:
            who = response.request.url.host
        except RuntimeError:  # a response made without a request
            who = "the server"
        said = f"{who} answered {status} {response.reason_phrase}".rstrip()
        code = f"http_{status}"
        if status in (408, 425, 429) or 500 <= status < 600:
            return cls.retry(
                said,
                error_code=code,
                http_status=status,
                retry_after=retry_after(response.headers.get("retry-after")),
                response_excerpt=excerpt,
            )
        if 300 <= status < 400:
            location = response.headers.get("location", "(no Location header)")[:500]
            said += (
                f", a redirect to {location}; redirects are not followed: "
                "set the URL to the final address"
            )
        return cls.fail(said, error_code=code, http_status=status, response_excerpt=excerpt)


@dataclass(frozen=True)
class WorkflowRef:
    id: str
    name: str


class AccountServices:
    """What the core offers one attempt beyond its settings: the account's suppression list,
    its plan's credits, the URLs a provider calls back. This base is what a context without a
    database has (``linktime.testing.run_action`` without a hub): nobody opted out, credits
    unlimited, no public URL."""

    def opted_out(self, address: str) -> str | None:
        """Why ``address`` (an E.164 number or an email address) is on the account's
        suppression list, as a sentence, or None when it is not."""
        return None

    def take_credits(self, kind: str, amount: int) -> bool:
        """Take ``amount`` of the plan's monthly ``kind`` credits (``"sms"``: one a segment) for
        this step: once per step, however often it is attempted (a retry takes nothing more),
        and given back if the step ends without sending. False when too few are left."""
        return True

    def callback_url(self, name: str) -> str | None:
        """Where the provider reports on this message: ``{LINKTIME_PUBLIC_URL}/v1/callbacks/
        {name}/{account key}`` for the callback ``name`` a plugin registers; None when the
        operator has not set ``LINKTIME_PUBLIC_URL`` (then ask for no callbacks)."""
        return None

    def unsubscribe_url(self, address: str) -> str | None:
        """The one-click unsubscribe URL (RFC 8058) that adds ``address`` to the account's
        suppression list; None without ``LINKTIME_PUBLIC_URL``."""
        return None

    def booking_sequence(self) -> int:
        """How many times the booking had changed (rescheduled, cancelled) up to this event:
        a calendar invite's SEQUENCE."""
        return 0

    def now(self) -> datetime:
        """The hub's clock (tests move it): what a wait is measured from."""
        return datetime.now(UTC)

    def booking_now(self, event: BookingEvent) -> Live:
        """The booking as it stands now (its status, time, paid, no-show), read again after
        every wait; without a database (or for a test run), as ``event`` describes it."""
        return Live.of_event(event)


NO_SERVICES = AccountServices()


@dataclass(frozen=True)
class ActionContext:
    """Everything one attempt of one step may use."""

    event: BookingEvent
    trigger: str
    workflow: WorkflowRef
    account_id: str
    plan: str
    run_id: str
    step_id: str
    position: int
    attempt: int
    settings: Any
    credentials: Any = None
    test: bool = False
    # Shared by the steps of this run while one worker executes them: for what a plugin derives
    # from the run alone (its event, trigger, workflow), built once instead of at every step.
    run_cache: dict[str, Any] = field(default_factory=dict)
    services: AccountServices = NO_SERVICES
    # The moment a wait (``Result.wait_until``) parked this step until, when it is taken up
    # again after one; None the first time the step is reached.
    waited_until: datetime | None = None
    # This attempt runs the step's fallback (its action failed for good).
    fallback: bool = False

    def facts(self) -> Facts:
        """What conditions are evaluated against: this event, the booking as it stands now
        and the hub's clock."""
        return Facts(self.event, self.services.booking_now(self.event), self.services.now())

    def render(self, source: str, *, html: bool = False) -> str:
        """Render a message template against this event (sandboxed; ``html`` autoescapes).
        Raises ``TemplateError``; a render stopped by its budget raises ``TemplateBudgetError``,
        which the engine turns into a permanent ``template_budget`` failure of the step."""
        return templating.render(source, self.event, html=html)

    @property
    def idempotency_key(self) -> str:
        """Stable across every attempt of this step: receivers de-duplicate on it."""
        key = f"msg_{self.step_id.removeprefix('stp_')}"
        # A fallback is another message (to another channel, maybe the same receiver).
        return f"{key}_fallback" if self.fallback else key


Execute = Callable[[ActionContext], "Result | Awaitable[Result]"]


@dataclass(frozen=True)
class Problem:
    """Why a step would not be sent as it stands, in words for the account's user (never an
    operator's variable name), with the fix as a sentence and, where there is one, the page
    to make it on."""

    message: str
    fix: str
    link: str | None = None

    @classmethod
    def operator(cls, message: str) -> Problem:
        """Something only the server's operator can set up."""
        return cls(message, "Contact your administrator.")


# How the Test panel shows a step's preview (``ActionType.preview_kind``), and the keys the
# plugin's ``preview`` returns for it:
#   "email"   subject, from, to (list), text, html (None: plain text only)
#   "sms"     to, text
#   "slack"   to (channel or "incoming webhook"), text
#   "webhook" method, url, headers, body
#   "voice"   to, script (None: handed to the AI agent)
# None (the default): each field of the preview in a list.
PREVIEW_KINDS = ("email", "sms", "slack", "webhook", "voice")


@dataclass(frozen=True)
class ActionType:
    """An action a workflow step can run, e.g. ``webhook.call``.

    ``integration`` names the account integration (e.g. ``"twilio"``) whose settings, validated
    by the ``credentials`` model, reach ``execute`` as ``ctx.credentials`` (None when the
    account has not connected it)."""

    name: str
    title: str
    settings: type[BaseModel]
    execute: Execute
    capability: str | None = None
    credentials: type[BaseModel] | None = None
    integration: str | None = None
    description: str = ""
    # What a step would send, for "test before you enable"; without it, the settings are shown
    # with their template fields rendered.
    preview: Callable[[ActionContext], dict[str, Any]] | None = None
    # How the Test panel draws that preview: one of PREVIEW_KINDS, or None.
    preview_kind: str | None = None
    # Problems only the plugin can see that would stop a step from being sent: its operator
    # settings, a recipient the booking lacks. Called with ``ctx.settings`` and
    # ``ctx.credentials`` (None when not connected) set; the core checks the rest (installed,
    # plan, integration connected).
    check: Callable[[ActionContext], list[Problem]] | None = None
    # Whether a step needs the account's integration connected to be sent: always (True),
    # never (False: it only adds to the message), or as the step's settings say.
    needs_integration: bool | Callable[[Any], bool] = True
    # For a live test run, whose booking has the tester as its invitee and host: the step's
    # settings with every person it names itself (fixed addresses, a fixed number) replaced by
    # the booking's people, so the test reaches nobody else. Without it the step is taken to
    # post somewhere that is no person (a channel, a URL), which the Test panel says before
    # sending.
    for_test: Callable[[Any], Any] | None = None
    # Error codes of this action that mean the server's own settings are at fault, beside the
    # ones every action shares (``errorcodes.OPERATOR_CODES``).
    operator_codes: frozenset[str] = frozenset()
    # The longest one attempt may take, in seconds: the engine stops an attempt past it, and a
    # worker refuses to start when it is not below the step lease.
    timeout: float = DEFAULT_ACTION_TIMEOUT
    # The endpoint a step with these settings delivers to (a webhook's URL), or None: the core
    # keeps each endpoint's health like Svix: a 410 answer disables it at once, failing every
    # attempt for ``endpoints.DISABLE_AFTER`` disables it, and a disabled endpoint's steps fail
    # with ``endpoint_disabled`` unsent until the account re-enables it.
    endpoint: Callable[[Any], str | None] | None = None
    # Checks the account's integration settings with the provider when they are connected
    # (``PUT /v1/integrations/{name}``): the credentials model's instance in, what is wrong
    # out as ``errors.FieldError``s naming the field (``auth_token``: "Twilio refused this
    # auth token"); none when they work. Only the first action of the integration that has
    # one is asked.
    verify_credentials: Callable[[Any], list[FieldError]] | None = None
    # A step's settings with a new signing secret, the old one still valid until the moment
    # given (``POST /v1/workflows/{id}/steps/{position}/rotate-secret``): (settings, until) ->
    # settings. None: the action has no secret to rotate.
    rotate_secret: Callable[[Any, Any], Any] | None = None
    # A logic step (delay, filter): it sends nothing, needs no plan capability and does not
    # count against the plan's actions per workflow.
    logic: bool = False

    def needs_connection(self, settings: Any) -> bool:
        """Whether a step with these settings cannot be sent before the account connects the
        action's integration (``needs_integration``, read for these settings)."""
        needs = self.needs_integration
        return self.integration is not None and bool(needs(settings) if callable(needs) else needs)

    def validate(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"action name {self.name!r} must look like 'channel.verb'")
        if not (isinstance(self.timeout, int | float) and math.isfinite(self.timeout)):
            raise ValueError(f"action {self.name}: timeout must be a number of seconds")
        if self.timeout <= 0:
            raise ValueError(f"action {self.name}: timeout must be above 0, got {self.timeout}")
        if (self.credentials is None) != (self.integration is None):
            raise ValueError(f"action {self.name}: credentials and integration go together")
        if not (isinstance(self.settings, type) and issubclass(self.settings, BaseModel)):
            raise ValueError(f"action {self.name}: settings must be a pydantic model class")
        if self.credentials is not None and not issubclass(self.credentials, BaseModel):
            raise ValueError(f"action {self.name}: credentials must be a pydantic model class")
        if not callable(self.execute):
            raise ValueError(f"action {self.name}: execute must be callable")
        if self.preview_kind is not None and self.preview_kind not in PREVIEW_KINDS:
            kinds = ", ".join(PREVIEW_KINDS)
            raise ValueError(f"action {self.name}: preview_kind must be one of {kinds} or None")


@dataclass(frozen=True)
class TriggerType:
    """A trigger: an event that arrives (``kind="event"``) or a time planned from the booking
    (``kind="time"``, ``anchor`` start or end, ``direction`` -1 before or +1 after)."""

    name: str
    title: str
    description: str = ""
    kind: Literal["event", "time"] = "event"
    anchor: Literal["start", "end"] | None = None
    direction: Literal[-1, 1] = 1

    def validate(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"trigger name {self.name!r} must look like 'subject.verb'")
        if (self.kind == "time") != (self.anchor is not None):
            raise ValueError(f"trigger {self.name}: a time trigger needs an anchor, others none")


@dataclass(frozen=True)
class TemplateStep:
    action: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Template:
    """A ready-made workflow users can start from."""

    name: str
    title: str
    trigger: str
    steps: tuple[TemplateStep, ...]
    description: str = ""
    offset_minutes: int = 0

    def validate(self) -> None:
        if not re.match(r"^[a-z][a-z0-9_-]*$", self.name):
            raise ValueError(f"template name {self.name!r} must be a lower-case slug")
        if not self.steps:
            raise ValueError(f"template {self.name}: needs at least one step")
