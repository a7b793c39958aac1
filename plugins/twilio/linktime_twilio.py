"""Twilio plumbing shared by LinkTime's Twilio channels, ``linktime-sms-twilio`` (``sms.send``),
``linktime-voice`` (``voice.call``) and ``linktime-whatsapp`` (``whatsapp.send``).

It registers no action; it is a plugin only for Twilio's callbacks (``register_callbacks``):
status reports of every message and call, and inbound messages (STOP, START), at
``POST /v1/callbacks/twilio/{account key}``. It holds what the channels need the same way: the
account's ``twilio`` integration (``TwilioCredentials``), phone numbers in E.164 checked
against a list of countries (``e164``, ``RecipientSettings``, ``recipient``), the operator
settings all read (``TwilioOperatorSettings``, with ``LINKTIME_TWILIO_API_BASE``), Twilio's
client on a pooled per-thread session that can be redirected to another base URL
(``TwilioHttp``), and Twilio's answers mapped to LinkTime results (``call_twilio``).
``linktime_twilio_testing``, shipped alongside, is a stand-in Twilio for tests.

Names a channel uses (stable):

- ``CALLBACK`` (``"twilio"``): the callback's name; ``report_args(ctx, **extra)`` the
  arguments of a create that ask Twilio to report there (``status_callback`` and ``extra``),
  none when the operator set no ``LINKTIME_PUBLIC_URL``.
- ``reachable(ctx, countries)``: the E.164 number a step goes to, or the ``Result`` that ends
  it unsent (a number refused, or on the account's suppression list); ask before Twilio.
- ``call_twilio(credentials, operator, create, to=number)``: Twilio's 21610
  ("unsubscribed recipient") becomes ``Result.opted_out(..., suppress=number)``.
- ``verify_credentials(credentials, operator)`` and ``credentials_verifier(operator_settings)``
  (an ``ActionType.verify_credentials``): the integration checked with Twilio at connect.
- ``handle_callback(request)``: the callback itself; ``delivery_update(form)`` and
  ``ERROR_WORDS`` map Twilio's MessageStatus/CallStatus and ErrorCode.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

import phonenumbers
from linktime.actions import ActionContext, Problem, Result
from linktime.callbacks import (
    Callback,
    CallbackAnswer,
    CallbackRefused,
    CallbackRequest,
    DeliveryUpdate,
)
from linktime.errors import FieldError
from linktime.hookspecs import hookimpl
from linktime.http import retry_after
from linktime.operator_settings import OperatorSettingError
from linktime.suppressions import PROVIDER
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode

if TYPE_CHECKING:
    # Twilio's SDK (and requests under it) is imported where Twilio is first called, so a
    # server that never texts or calls does not load it (issue 17: the embedded default's RSS).
    import requests
    from twilio.base.exceptions import (  # type: ignore[import-untyped]
        TwilioRestException,
        TwilioServiceException,
    )
    from twilio.rest import Client  # type: ignore[import-untyped]

    # Built on first use by ``_http_class`` (it subclasses the SDK's TwilioHttpClient).
    TwilioHttp = Any

__version__ = "0.1.0"

INTEGRATION = "twilio"
CALLBACK = "twilio"
NOT_CONNECTED = "Twilio is not connected: connect it in Settings."
API_BASE_ENV = "LINKTIME_TWILIO_API_BASE"
DEFAULT_COUNTRIES = frozenset({"US", "CA", "GB", "IE", "DE", "FR", "ES", "IT", "NL", "AU", "NZ"})
EXCERPT_CHARS = 1024
_SHORT_CODE_RE = re.compile(r"^[0-9]{3,8}$")
_ALPHA_SENDER_RE = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


class NumberRefused(ValueError):
    """A phone number that will not be called or texted; ``code`` becomes the error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def e164(raw: str, countries: frozenset[str] | None = None) -> str:
    """``raw`` in E.164; refused when it is not a valid number or not in ``countries``."""
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        raise NumberRefused(
            "invalid_number",
            f"{raw!r} is not a phone number in international format (e.g. +14155550123)",
        ) from None
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(number):
        raise NumberRefused("invalid_number", f"{formatted} is not a valid phone number")
    region = phonenumbers.region_code_for_number(number) or "unknown"
    if countries is not None and region not in countries:
        raise NumberRefused(
            "unsupported_country",
            f"{formatted} is a {region} number; this service sends only to "
            f"{', '.join(sorted(countries))}",
        )
    return formatted


class TwilioCredentials(BaseModel):
    """The account's ``twilio`` integration (shared by sms.send and voice.call)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    account_sid: str = Field(
        pattern=r"^AC[0-9a-fA-F]{32}$",
        description="Account SID: AC followed by 32 digits or letters a to f",
    )
    auth_token: SecretStr = Field(min_length=1, description="The account's auth token")
    from_number: str | None = Field(
        default=None,
        max_length=40,
        description="Sender: a Twilio number (E.164), short code or alphanumeric sender ID",
    )
    messaging_service_sid: str | None = Field(
        default=None,
        pattern=r"^MG[0-9a-fA-F]{32}$",
        description="Messaging Service SID: MG followed by 32 digits or letters a to f",
    )

    @field_validator("from_number")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is None or _SHORT_CODE_RE.match(value) or _ALPHA_SENDER_RE.match(value):
            return value
        return e164(value)

    @model_validator(mode="after")
    def _has_sender(self) -> TwilioCredentials:
        if not (self.from_number or self.messaging_service_sid):
            raise ValueError("set from_number, messaging_service_sid, or both")
        return self


class TwilioOperatorSettings(BaseSettings):
    """What both Twilio plugins read from the environment, each with
    ``linktime.plugin_settings(its prefix, its subclass)`` (``LINKTIME_SMS_``…; the API base
    is ``LINKTIME_TWILIO_API_BASE`` for both). A subclass sets ``user_agent``, the product token
    it adds to Twilio's User-Agent."""

    user_agent: ClassVar[str | None] = None

    supported_countries: Annotated[frozenset[str], NoDecode] = Field(
        default=DEFAULT_COUNTRIES, description="ISO 3166 codes recipients may be in, e.g. 'US,CA'"
    )
    timeout: float = Field(default=15.0, gt=0, description="Seconds for one Twilio request")
    twilio_api_base: str | None = Field(
        default=None, validation_alias=API_BASE_ENV, description="Replaces https://*.twilio.com"
    )

    @field_validator("supported_countries", mode="before")
    @classmethod
    def _iso_codes(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        codes = frozenset(part.strip().upper() for part in value.split(",") if part.strip())
        unknown = sorted(codes - phonenumbers.SUPPORTED_REGIONS)
        if unknown or not codes:
            raise ValueError(f"expected ISO country codes, e.g. US,CA; unknown: {unknown}")
        return codes

    @field_validator("twilio_api_base")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{API_BASE_ENV} must be an http(s) URL, got {value!r}")
        return value.rstrip("/")


RecipientSettingsT = TypeVar("RecipientSettingsT", bound="RecipientSettings")


class RecipientSettings(BaseModel):
    """Who a step calls or texts. Each channel's step settings subclass it and say which
    countries a listed number may be in (``supported_countries``, read when validated)."""

    model_config = ConfigDict(extra="forbid")

    to: Literal["invitee", "host", "number"] = Field(
        default="invitee", description="The booking's invitee or host, or a fixed number"
    )
    number: str | None = Field(
        default=None,
        max_length=40,
        validate_default=True,
        description="In international format, e.g. +14155550100; needed when To is 'number'",
    )

    @field_validator("number")
    @classmethod
    def _listed_number(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if info.data.get("to") == "number":
                raise ValueError("Enter the phone number to reach")
            return None
        return e164(value, cls.supported_countries())

    @classmethod
    def supported_countries(cls) -> frozenset[str]:
        """The countries a listed ``number`` may be in: the channel's operator setting."""
        raise NotImplementedError(f"{cls.__name__} must say which countries it sends to")


def to_the_invitee(settings: RecipientSettingsT) -> RecipientSettingsT:
    """A step's settings for a live test (``ActionType.for_test``): a fixed number becomes the
    booking's invitee, who is the tester."""
    if settings.to != "number":
        return settings
    return settings.model_copy(update={"to": "invitee", "number": None})


def recipient(ctx: ActionContext, countries: frozenset[str]) -> str:
    """The E.164 number this step goes to, checked against ``countries`` (raises NumberRefused)."""
    settings: RecipientSettings = ctx.settings
    booking = ctx.event.booking
    if settings.to == "number":
        raw = settings.number
    elif settings.to == "invitee":
        person = booking.invitee or next(iter(booking.invitees), None)
        raw = person.phone if person else None
    else:
        person = booking.host or next(iter(booking.hosts), None)
        raw = person.phone if person else None
    if not raw:
        raise NumberRefused("no_phone_number", f"the booking's {settings.to} has no phone number")
    return e164(raw, countries)


_FIXES = {
    "no_phone_number": "Ask for a phone number on the booking form, or send to a fixed number.",
    "unsupported_country": "Send to a number in one of those countries.",
    "invalid_number": "Correct the number, in international format (e.g. +14155550123).",
}


def check_recipient(
    ctx: ActionContext, operator: Callable[[], TwilioOperatorSettings], what: str
) -> list[Problem]:
    """What would stop a text or call before Twilio is asked: the server's setup for ``what``
    ("Text messages"; ``operator`` reads it with ``linktime.plugin_settings``), or a number
    this booking does not have or the server may not reach."""
    try:
        countries = operator().supported_countries
    except OperatorSettingError:
        return [Problem.operator(f"{what} are not set up correctly on this server.")]
    try:
        recipient(ctx, countries)
    except NumberRefused as exc:
        said = str(exc)
        return [Problem(f"{said[:1].upper()}{said[1:]}.", _FIXES[exc.code])]
    return []


def recipient_shown(ctx: ActionContext) -> str:
    """Who the preview says a text or call goes to: the number, or whose number is missing."""
    try:
        return recipient(ctx, frozenset(phonenumbers.SUPPORTED_REGIONS))
    except NumberRefused:
        settings: RecipientSettings = ctx.settings
        return f"The {settings.to} (no phone number)" if settings.to != "number" else "—"


_local = threading.local()


_http_class_lock = threading.Lock()


def _http_class() -> type[Any]:
    """``TwilioHttp``, defined on first use (it subclasses the SDK's ``TwilioHttpClient``);
    the same class for every thread."""
    with _http_class_lock:
        return _define_http_class()


@functools.cache
def _define_http_class() -> type[Any]:
    import requests
    from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]
    from twilio.http.response import Response  # type: ignore[import-untyped]

    class TwilioHttp(TwilioHttpClient):  # type: ignore[misc]
        """Twilio's documented extension point, a custom ``http_client``: reuses this thread's
        pooled session, sends to ``api_base`` instead of Twilio's hosts when set, and keeps the
        last response, whose headers (Retry-After) Twilio's exceptions leave out."""

        def __init__(self, api_base: str | None, timeout: float) -> None:
            super().__init__(pool_connections=False, timeout=timeout)
            # A requests Session is not thread-safe: one per worker thread, kept across steps.
            if not hasattr(_local, "session"):
                _local.session = requests.Session()
            self.session = _local.session
            self.api_base = api_base
            # Twilio's exceptions come from an answer, so by then this holds it.
            self.last = Response(0, "", {})

        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
            if self.api_base:
                parts = urlsplit(url)
                url = self.api_base + parts.path + (f"?{parts.query}" if parts.query else "")
            self.last = super().request(method, url, *args, **kwargs)
            return self.last

    TwilioHttp.__module__ = __name__
    TwilioHttp.__qualname__ = "TwilioHttp"
    return TwilioHttp


def __getattr__(name: str) -> Any:
    # ``TwilioHttp`` (a public name) is built, with Twilio's SDK imported, when first asked for.
    if name == "TwilioHttp":
        return _http_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


UNSUBSCRIBED = 21610


def _twilio_failure(
    exc: TwilioRestException | TwilioServiceException, http: TwilioHttp, to: str | None
) -> Result:
    from twilio.base.exceptions import TwilioRestException

    status: int = exc.status
    if isinstance(exc, TwilioRestException):
        # The SDK puts "Unable to create record: " before Twilio's own message.
        said = exc.msg.partition(": ")[2] or exc.msg
    else:
        said = exc.detail or exc.title
    # Without a Twilio code in the body the SDK repeats the HTTP status as the code.
    code = exc.code if exc.code and exc.code != status else None
    error_code = f"twilio_{code}" if code else f"http_{status}"
    error = f"Twilio answered {status}" + (f", error {code}" if code else "") + f": {said}"
    if code:
        error += f" (https://www.twilio.com/docs/errors/{code})"
    if status == 401:
        error = f"Twilio authentication failed: check the account SID and auth token. {error}"
    excerpt = http.last.text[:EXCERPT_CHARS] or None
    if code == UNSUBSCRIBED and to is not None:
        # The number replied STOP to this Twilio sender: Twilio will send it nothing until it
        # replies START, so it goes on the account's list and later steps skip it.
        return Result.opted_out(
            f"{to} has unsubscribed (replied STOP) from this Twilio account's messages. {error}",
            error_code=error_code,
            suppress=to,
            http_status=status,
            response_excerpt=excerpt,
        )
    if status == 429 or status >= 500:
        return Result.retry(
            error,
            error_code=error_code,
            http_status=status,
            retry_after=retry_after(http.last.headers.get("Retry-After")),
            response_excerpt=excerpt,
        )
    return Result.fail(error, error_code=error_code, http_status=status, response_excerpt=excerpt)


def client_for(
    credentials: TwilioCredentials, operator: TwilioOperatorSettings
) -> tuple[Client, TwilioHttp]:
    """Twilio's official client for this integration, on a ``TwilioHttp``."""
    from twilio.rest import Client

    http = _http_class()(operator.twilio_api_base, operator.timeout)
    client = Client(
        credentials.account_sid,
        credentials.auth_token.get_secret_value(),
        http_client=http,
        user_agent_extensions=[operator.user_agent] if operator.user_agent else None,
    )
    return client, http


def call_twilio(
    credentials: TwilioCredentials,
    operator: TwilioOperatorSettings,
    create: Callable[[Any], Any],
    *,
    to: str | None = None,
) -> Result:
    """Run ``create(client)`` (one Twilio create call) and map what came back to a Result;
    with the recipient ``to``, Twilio's 21610 (unsubscribed) is an opt-out that adds it to the
    account's suppression list."""
    import requests
    from twilio.base.exceptions import TwilioRestException, TwilioServiceException

    client, http = client_for(credentials, operator)
    try:
        created = create(client)
    except (TwilioRestException, TwilioServiceException) as exc:
        return _twilio_failure(exc, http, to)
    except requests.Timeout:
        return Result.retry(
            f"no answer from Twilio within {operator.timeout:g}s", error_code="timeout"
        )
    except requests.RequestException as exc:
        return Result.retry(
            f"could not reach Twilio: {type(exc).__name__}: {exc}"[:500],
            error_code="connection_error",
        )
    return Result.ok(
        str(created.sid),
        http_status=http.last.status_code,
        response_excerpt=http.last.text[:EXCERPT_CHARS],
    )


# --- before sending ------------------------------------------------------------------------------


def report_args(ctx: ActionContext, **extra: Any) -> dict[str, Any]:
    """The arguments of a create that ask Twilio to report on the message or call
    (``status_callback`` and ``extra``), or none when the operator has not set
    ``LINKTIME_PUBLIC_URL``."""
    url = ctx.services.callback_url(CALLBACK)
    return {} if url is None else {"status_callback": url, **extra}


def reachable(ctx: ActionContext, countries: frozenset[str]) -> str | Result:
    """The E.164 number this step goes to, or the result that ends it without asking Twilio: a
    number refused (none on the booking, invalid, outside ``countries``), or one on the
    account's suppression list (one list for every channel)."""
    try:
        number = recipient(ctx, countries)
    except NumberRefused as exc:
        return Result.fail(str(exc), error_code=exc.code)
    reason = ctx.services.opted_out(number)
    return number if reason is None else Result.opted_out(reason)


# --- the settings, checked with Twilio at connect ------------------------------------------------


def _twilio_status(exc: TwilioRestException | TwilioServiceException) -> int:
    return int(exc.status)


def verify_credentials(
    credentials: TwilioCredentials, operator: TwilioOperatorSettings
) -> list[FieldError]:
    """What Twilio (or the operator's countries) refuses in these settings, field by field: the
    account SID and auth token (fetching the account), a from_number in E.164 the account does
    not own or in a country this server does not serve, a messaging service it does not have.
    Empty when they work."""
    refused: list[FieldError] = []
    sender = credentials.from_number
    number = sender if sender and sender.startswith("+") else None
    if number is not None:
        try:
            e164(number, operator.supported_countries)
        except NumberRefused as exc:
            refused.append(FieldError("from_number", f"{str(exc)[:1].upper()}{str(exc)[1:]}."))
            number = None
    import requests
    from twilio.base.exceptions import TwilioRestException, TwilioServiceException

    client, _ = client_for(credentials, operator)
    sid = credentials.account_sid
    try:
        client.api.v2010.accounts(sid).fetch()
    except (TwilioRestException, TwilioServiceException) as exc:
        if _twilio_status(exc) == 401:
            said = (
                "Twilio refused this account SID and auth token: copy both from the Twilio "
                "console (the auth token may have been changed there)."
            )
            return [*refused, FieldError("auth_token", said)]
        if _twilio_status(exc) == 404:
            said = f"Twilio has no account {sid}: check the account SID on the Twilio console."
            return [*refused, FieldError("account_sid", said)]
        return [*refused, _unchecked(f"Twilio answered {_twilio_status(exc)}")]
    except requests.RequestException as exc:
        return [*refused, _unreachable(exc, operator)]
    try:
        if number is not None and not client.api.v2010.accounts(sid).incoming_phone_numbers.list(
            phone_number=number, limit=1
        ):
            said = (
                f"{number} is not one of this Twilio account's phone numbers: use a number "
                "listed under Phone Numbers on the Twilio console."
            )
            refused.append(FieldError("from_number", said))
        service = credentials.messaging_service_sid
        if service is not None:
            try:
                client.messaging.v1.services(service).fetch()
            except (TwilioRestException, TwilioServiceException) as exc:
                if _twilio_status(exc) != 404:
                    raise
                said = f"This Twilio account has no messaging service {service}."
                refused.append(FieldError("messaging_service_sid", said))
    except (TwilioRestException, TwilioServiceException) as exc:
        refused.append(_unchecked(f"Twilio answered {_twilio_status(exc)}"))
    except requests.RequestException as exc:
        refused.append(_unreachable(exc, operator))
    return refused


def _unchecked(why: str) -> FieldError:
    return FieldError("account_sid", f"These settings could not be checked: {why}. Try again.")


def _unreachable(exc: requests.RequestException, operator: TwilioOperatorSettings) -> FieldError:
    import requests

    if isinstance(exc, requests.Timeout):
        return _unchecked(f"Twilio did not answer within {operator.timeout:g}s")
    return _unchecked("Twilio could not be reached")


def credentials_verifier(
    operator_settings: Callable[[], TwilioOperatorSettings],
) -> Callable[[Any], list[FieldError]]:
    """A channel's ``ActionType.verify_credentials``: ``verify_credentials`` with its operator
    settings (``operator_settings`` reads them; not valid: nothing can be checked)."""

    def verify(credentials: Any) -> list[FieldError]:
        try:
            operator = operator_settings()
        except OperatorSettingError:
            said = "Twilio is not set up correctly on this server: contact your administrator."
            return [FieldError("account_sid", said)]
        return verify_credentials(credentials, operator)

    return verify


# --- what Twilio tells us afterwards ---------------------------------------------------------

# MessageStatus and CallStatus as delivery statuses; others (an inbound message's "received")
# say nothing about a message sent.
MESSAGE_STATUSES = {
    "queued": "accepted",
    "accepted": "accepted",
    "scheduled": "accepted",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}
CALL_STATUSES = {
    "queued": "accepted",
    "initiated": "accepted",
    "ringing": "sent",
    "in-progress": "sent",
    "completed": "delivered",
    "busy": "undelivered",
    "no-answer": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}
# Twilio's error codes of a message or call that was not delivered, in words
# (https://www.twilio.com/docs/api/errors).
ERROR_WORDS = {
    "21610": "the recipient has unsubscribed (replied STOP)",
    "30001": "Twilio's queue for this sender overflowed",
    "30002": "the Twilio account is suspended",
    "30003": "unreachable handset (switched off or out of coverage)",
    "30004": "message blocked (by the recipient or their carrier)",
    "30005": "unknown number (it does not exist or is no longer in service)",
    "30006": "landline or unreachable carrier",
    "30007": "carrier filtered the message as spam or unregistered traffic",
    "30008": "unknown error at the carrier",
    "30009": "a segment of the message went missing",
    "30010": "the message price exceeds the account's maximum price",
    "30034": "the sender number is not registered for A2P 10DLC",
    "63016": "outside WhatsApp's 24-hour window: an approved template is needed",
    "63024": "not a WhatsApp user",
}
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def delivery_update(form: Mapping[str, str]) -> DeliveryUpdate | None:
    """A status callback's form as a delivery update of the message (MessageSid) or call
    (CallSid) it is about; None for a status that says nothing about delivery."""
    if form.get("CallSid") and form.get("CallStatus"):
        sid, status = form["CallSid"], CALL_STATUSES.get(form["CallStatus"])
    else:
        sid = form.get("MessageSid") or form.get("SmsSid") or ""
        status = MESSAGE_STATUSES.get(form.get("MessageStatus") or "")
    if not sid or status is None:
        return None
    code = form.get("ErrorCode") or None
    if code is None or status in ("accepted", "sent", "delivered"):
        return DeliveryUpdate(sid, status)
    words = ERROR_WORDS.get(code, "see Twilio's error list")
    error = f"Twilio error {code}: {words} (https://www.twilio.com/docs/errors/{code})"
    return DeliveryUpdate(sid, status, error_code=f"twilio_{code}", error=error)


def _opt_out(form: Mapping[str, str]) -> CallbackAnswer:
    """An inbound message: STOP and its synonyms suppress the sender, START lifts it (Twilio's
    Advanced Opt-Out names its own keywords in ``OptOutType``)."""
    number = (form.get("From") or "").removeprefix("whatsapp:")
    kind = (form.get("OptOutType") or "").strip().upper()
    word = (form.get("Body") or "").strip().upper()
    answer = CallbackAnswer(body=EMPTY_TWIML, media_type="text/xml")
    if not number:
        return answer
    # Twilio's id of the inbound message: a redelivered or replayed STOP/START counts once.
    receipt = form.get("MessageSid") or form.get("SmsSid")
    if kind == "STOP" or (not kind and word in STOP_WORDS):
        said = f"replied {(word or kind)[:40]} by text message"
        return replace(answer, suppress={number: said}, receipt=receipt)
    if kind == "START" or (not kind and word in START_WORDS):
        return replace(answer, unsuppress=[number], receipt=receipt)
    return answer


def handle_callback(request: CallbackRequest) -> CallbackAnswer:
    """Twilio's request for one account, checked with its auth token: a status callback
    becomes a delivery update, an inbound message an opt-out or opt-in."""
    credentials: TwilioCredentials | None = request.credentials
    if credentials is None:
        raise CallbackRefused("Twilio is not connected for this account")
    signature = next(
        (v for k, v in request.headers.items() if k.lower() == "x-twilio-signature"), ""
    )
    from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

    validator = RequestValidator(credentials.auth_token.get_secret_value())
    if not signature or not validator.validate(request.url, dict(request.form), signature):
        raise CallbackRefused("X-Twilio-Signature does not match the account's auth token")
    form = request.form
    status = form.get("MessageStatus") or form.get("SmsStatus")
    if form.get("CallStatus") or (status and status not in ("received", "receiving")):
        update = delivery_update(form)
        to = (form.get("To") or "").removeprefix("whatsapp:")
        if update and update.error_code == f"twilio_{UNSUBSCRIBED}" and to:
            # A message a messaging service queued, refused later: as when Twilio answers 21610.
            stop = {to: "Twilio refused to send to it: it has unsubscribed (error 21610)"}
            return CallbackAnswer(
                updates=[update],
                suppress=stop,
                suppress_source=PROVIDER,
                receipt=f"{update.external_id}:{update.status}",
            )
        return CallbackAnswer(updates=[update] if update else [])
    if "Body" in form or form.get("OptOutType"):
        return _opt_out(form)
    return CallbackAnswer()


@hookimpl
def register_callbacks(register: Callable[[Callback], None]) -> None:
    register(
        Callback(
            name=CALLBACK,
            integration=INTEGRATION,
            credentials=TwilioCredentials,
            handle=handle_callback,
            description="Twilio reports here whether each text, call and WhatsApp message "
            "was delivered (asked for with every send). For STOP and START replies to reach "
            "your opt-out list directly, set this URL as your Twilio number's \"A message comes "
            'in" webhook (HTTP POST) in the Twilio console.',
        )
    )
