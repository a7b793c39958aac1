"""Message templates: Jinja2's sandbox with strict undefined, over a documented set of fields.

Plugins type a settings field as ``TemplateStr``: it is compiled and test-rendered against a
sample booking when the workflow is saved, so an unknown field or a syntax error is refused then,
named with its line, rather than failing a delivery later.
"""

from __future__ import annotations

import operator
import re
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from pydantic import AfterValidator
from pydantic.fields import FieldInfo

from .models import BookingEvent, Person, sample_event

DEFAULT_FORMAT = "%A, %B %-d, %Y %-I:%M %p %Z"
MAX_OUTPUT = 100_000  # characters; a template that builds more is refused


class _Env(SandboxedEnvironment):
    # Cap repetition so `"x" * 10**9` fails instead of exhausting memory.
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int) and right > 64:
                raise SecurityError("exponent too large")
            return operator.pow(left, right)
        sizes = [len(x) for x in (left, right) if isinstance(x, str | list | tuple)]
        counts = [x for x in (left, right) if isinstance(x, int)]
        if sizes and counts and sizes[0] * counts[0] > MAX_OUTPUT:
            raise SecurityError("repetition too large")
        return operator.mul(left, right)


@pass_context
def localtime(
    context: Context, value: datetime | str | None, tz: str | None = None, fmt: str | None = None
) -> str:
    """``{{ booking.start | localtime }}`` in the invitee's timezone, or
    ``localtime(host.timezone)``, ``localtime("Europe/Paris", "%H:%M")``."""
    if value is None or value == "":
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    zone = tz or (context.get("invitee") or {}).get("timezone") or "UTC"
    return moment.astimezone(ZoneInfo(zone)).strftime(fmt or DEFAULT_FORMAT)


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def _environment(autoescape: bool) -> SandboxedEnvironment:
    env = _Env(undefined=StrictUndefined, autoescape=autoescape, finalize=_finalize)
    env.filters["localtime"] = localtime
    return env


_PLAIN = _environment(autoescape=False)
_HTML = _environment(autoescape=True)


def _person(p: Person | None) -> dict[str, Any]:
    if p is None:
        return {
            "name": "",
            "first_name": "",
            "last_name": "",
            "email": None,
            "phone": None,
            "timezone": "UTC",
        }
    first, _, last = p.name.partition(" ")
    return {**p.model_dump(), "first_name": first, "last_name": last}


def variables(event: BookingEvent) -> dict[str, Any]:
    """Everything a template may use (documented in the README's table)."""
    b = event.booking
    booking = b.model_dump()
    invitee = _person(b.invitee or (b.invitees[0] if b.invitees else None))
    host = _person(b.host or (b.hosts[0] if b.hosts else None))
    tz = ZoneInfo(invitee["timezone"])
    start, end = b.start.astimezone(tz), b.end.astimezone(tz)
    payment = (
        b.payment.model_dump()
        if b.payment
        else {"amount": None, "currency": None, "reference": None}
    )
    event_type = (
        b.event_type.model_dump() if b.event_type else {"id": None, "slug": None, "title": None}
    )
    return {
        "event": {"id": event.id, "type": event.type, "occurred_at": event.occurred_at},
        "booking": booking,
        "invitee": invitee,
        "host": host,
        "event_type": event_type,
        "payment": payment,
        # Cal.com's flat names, dates in the attendee's timezone
        "event_name": b.title or event_type["title"] or "",
        "event_date": start.strftime("%A, %B %-d, %Y"),
        "event_time": start.strftime("%-I:%M %p"),
        "event_end_time": end.strftime("%-I:%M %p"),
        "timezone": invitee["timezone"],
        "location": b.location,
        "organizer_name": host["name"],
        "attendee_name": invitee["name"],
        "attendee_first_name": invitee["first_name"],
        "attendee_last_name": invitee["last_name"],
        "attendee_email": invitee["email"],
        "additional_notes": b.notes,
        "meeting_url": b.meeting_url,
        "cancel_url": b.cancel_url,
        "reschedule_url": b.reschedule_url,
        "cancellation_reason": b.cancellation_reason,
        "reschedule_reason": b.reschedule_reason,
        "payment_amount": f"{payment['amount']} {payment['currency']}" if b.payment else "",
    }


_UNDEFINED_RE = re.compile(r"has no attribute '([^']+)'|'([^']+)' is undefined")


class TemplateError(ValueError):
    """A template that cannot render: syntax error, unknown field, or sandbox violation."""


def _line_of(exc: BaseException) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render(source: str, event: BookingEvent, *, html: bool = False) -> str:
    env = _HTML if html else _PLAIN
    try:
        out = env.from_string(source).render(variables(event))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: syntax error: {exc.message}") from None
    except UndefinedError as exc:
        where = _line_of(exc)
        prefix = f"line {where}: " if where else ""
        found = _UNDEFINED_RE.search(exc.message or "")
        field = next((g for g in found.groups() if g), "?") if found else "?"
        raise TemplateError(f"{prefix}unknown field '{field}'") from None
    except SecurityError as exc:
        raise TemplateError(f"not allowed in a template: {exc}") from None
    except Exception as exc:  # filters given bad input, and the like
        where = _line_of(exc)
        prefix = f"line {where}: " if where else ""
        raise TemplateError(f"{prefix}{type(exc).__name__}: {exc}") from None
    if len(out) > MAX_OUTPUT:
        raise TemplateError(f"renders to more than {MAX_OUTPUT} characters")
    return out


_SAMPLES = [sample_event(t) for t in ("booking.created", "booking.cancelled", "payment.received")]


def check_template(source: str) -> str:
    """Refuse a template that would not render for a booking (used when a workflow is saved)."""
    for sample in _SAMPLES:
        render(source, sample)
    return source


TemplateStr = Annotated[str, AfterValidator(check_template)]


def is_template(field: FieldInfo) -> bool:
    """Whether a settings field is typed ``TemplateStr``."""
    return any(getattr(m, "func", None) is check_template for m in field.metadata)
