"""Conditions: declarative checks on a booking event and on the booking as it is now.

A condition is ``{"field": …, "op": …, "value": …}``; a list means all must hold, ``{"any":
[…]}`` that one of its conditions must, ``{"all": […]}`` that all must. The fields, their types
and operators are ``catalogue()`` (``GET /v1/conditions/fields``). There is no expression
language: only these fields, these operators and literal values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .models import BookingEvent, Timestamp

Kind = Literal["string", "number", "boolean", "time", "custom"]

MAX_TOP = 20  # conditions in a list
MAX_GROUP = 20  # conditions in one any/all
MAX_NODES = 50  # conditions and groups in all, however nested
MAX_DEPTH = 4  # a list's conditions are at depth 1, a group's at one more than the group
MAX_TEXT = 500
MAX_LIST = 100  # values of an in / not_in
# Numbers as large as any booking needs, small enough that str() and Decimal stay cheap.
MAX_NUMBER = 10**15

CUSTOM = "custom."
CUSTOM_KEY = re.compile(r"[A-Za-z0-9_.-]{1,100}")

OPERATORS: dict[Kind, tuple[str, ...]] = {
    "string": ("eq", "ne", "in", "not_in", "contains", "starts_with", "exists"),
    "number": ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists"),
    "boolean": ("eq", "ne", "exists"),
    "time": ("before", "after", "exists"),
    "custom": (
        *("eq", "ne", "in", "not_in", "contains", "starts_with"),
        *("gt", "gte", "lt", "lte", "exists"),
    ),
}
_TEXT_OPS = ("contains", "starts_with")
_ORDER_OPS = ("gt", "gte", "lt", "lte")
_SEE_FIELDS = "see GET /v1/conditions/fields"


# --- the facts a condition looks at ----------------------------------------------------------


@dataclass(frozen=True)
class Live:
    """The booking as it is now (the bookings table), or as the event says when there is no
    stored state (test runs)."""

    status: str
    start: datetime
    end: datetime
    paid: bool
    no_show: bool

    @classmethod
    def of_event(cls, event: BookingEvent) -> Live:
        booking = event.booking
        cancelled = event.type == "booking.cancelled"
        return cls(
            status="cancelled" if cancelled else booking.status,
            start=booking.start,
            end=booking.end,
            paid=event.type == "payment.received",
            no_show=bool(getattr(booking, "no_show", False)),
        )


@dataclass(frozen=True)
class Facts:
    event: BookingEvent
    live: Live
    now: datetime

    def value(self, field: str) -> Any:
        """The field's value, None when the event does not give it."""
        if field.startswith(CUSTOM):
            custom = getattr(self.event.booking, "custom_fields", None) or {}
            return custom.get(field.removeprefix(CUSTOM))
        return FIELDS[field].read(self)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _person(role: str, attribute: str) -> Callable[[Facts], Any]:
    def read(facts: Facts) -> Any:
        person = getattr(facts.event.booking, role)
        return None if person is None else getattr(person, attribute)

    return read


def _booking(attribute: str) -> Callable[[Facts], Any]:
    return lambda facts: getattr(facts.event.booking, attribute)


def _event_type(attribute: str) -> Callable[[Facts], Any]:
    def read(facts: Facts) -> Any:
        ref = facts.event.booking.event_type
        return None if ref is None else _text(getattr(ref, attribute))

    return read


def _payment(read: Callable[[Any], Any]) -> Callable[[Facts], Any]:
    def of(facts: Facts) -> Any:
        payment = facts.event.booking.payment
        return None if payment is None else read(payment)

    return of


@dataclass(frozen=True)
class _Spec:
    kind: Kind
    title: str
    read: Callable[[Facts], Any]
    example: tuple[str, Any]  # an operator and a value for the catalogue's example


FIELDS: dict[str, _Spec] = {
    "event.type": _Spec(
        "string", "The event the run carries", lambda f: f.event.type, ("eq", "booking.created")
    ),
    "event_type.slug": _Spec(
        "string", "Event type slug", _event_type("slug"), ("eq", "intro-call")
    ),
    "event_type.id": _Spec("string", "Event type id", _event_type("id"), ("eq", "et_1")),
    "event_type.title": _Spec(
        "string", "Event type title", _event_type("title"), ("contains", "intro")
    ),
    "booking.uid": _Spec("string", "Booking uid", _booking("uid"), ("eq", "bk_123")),
    "booking.title": _Spec("string", "Booking title", _booking("title"), ("contains", "call")),
    "booking.location": _Spec(
        "string", "Location", _booking("location"), ("in", ["Online", "Office"])
    ),
    "booking.meeting_url": _Spec(
        "string", "Meeting link", _booking("meeting_url"), ("starts_with", "https://meet.")
    ),
    "booking.notes": _Spec("string", "Invitee's notes", _booking("notes"), ("exists", True)),
    "host.name": _Spec("string", "Host name", _person("host", "name"), ("eq", "Ada Lovelace")),
    "host.email": _Spec(
        "string", "Host email", _person("host", "email"), ("eq", "ada@example.com")
    ),
    "host.timezone": _Spec(
        "string", "Host timezone", _person("host", "timezone"), ("eq", "Europe/Berlin")
    ),
    "invitee.name": _Spec(
        "string", "Invitee name", _person("invitee", "name"), ("starts_with", "Grace")
    ),
    "invitee.email": _Spec(
        "string", "Invitee email", _person("invitee", "email"), ("contains", "@example.com")
    ),
    "invitee.phone": _Spec(
        "string", "Invitee phone", _person("invitee", "phone"), ("exists", True)
    ),
    "invitee.timezone": _Spec(
        "string", "Invitee timezone", _person("invitee", "timezone"), ("ne", "UTC")
    ),
    "guests.count": _Spec(
        "number", "Number of guests", lambda f: len(f.event.booking.guests), ("gt", 0)
    ),
    "payment.amount": _Spec("number", "Amount paid", _payment(lambda p: p.amount), ("gte", 50)),
    "payment.currency": _Spec(
        "string", "Payment currency", _payment(lambda p: p.currency), ("eq", "USD")
    ),
    "payment.status": _Spec(
        "string",
        "Payment status, when the event gives it",
        _payment(lambda p: _text((p.model_extra or {}).get("status"))),
        ("eq", "succeeded"),
    ),
    "booking.status": _Spec(
        "string", "Booking status now", lambda f: f.live.status, ("eq", "accepted")
    ),
    "booking.confirmed": _Spec(
        "boolean", "Confirmed now", lambda f: f.live.status == "accepted", ("eq", True)
    ),
    "booking.paid": _Spec("boolean", "Paid now", lambda f: f.live.paid, ("eq", False)),
    "booking.cancelled": _Spec(
        "boolean", "Cancelled now", lambda f: f.live.status == "cancelled", ("eq", False)
    ),
    "booking.no_show": _Spec("boolean", "Marked a no-show", lambda f: f.live.no_show, ("eq", True)),
    "booking.start": _Spec(
        "time", "Meeting start now", lambda f: f.live.start, ("after", "2026-12-01T00:00:00Z")
    ),
    "booking.end": _Spec(
        "time", "Meeting end now", lambda f: f.live.end, ("before", "2026-12-31T23:59:59Z")
    ),
    "booking.starts_in_hours": _Spec(
        "number",
        "Hours until the meeting starts (negative once started)",
        lambda f: (f.live.start - f.now).total_seconds() / 3600,
        ("lt", 24),
    ),
}


def kind_of(field: str) -> Kind | None:
    """The field's type, None for an unknown field."""
    if field.startswith(CUSTOM):
        return "custom" if CUSTOM_KEY.fullmatch(field.removeprefix(CUSTOM)) else None
    spec = FIELDS.get(field)
    return None if spec is None else spec.kind


# --- the model: validated on save --------------------------------------------------------------


def _problem(message: str) -> PydanticCustomError:
    return PydanticCustomError("condition", message)


def _number(value: Any) -> int | float:
    # The bound first: math.isfinite overflows on an int of 309 digits or more.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or abs(value) > MAX_NUMBER
        or not math.isfinite(value)
    ):
        raise _problem("expected a number from -1e15 to 1e15")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _problem(f"expected a string of at most {MAX_TEXT} characters")
    return value


def _string_or_number(value: Any) -> str | int | float:
    return _string(value) if isinstance(value, str) else _number(value)


_MOMENT: TypeAdapter[datetime] = TypeAdapter(Timestamp)


def _moment_of(value: str) -> datetime:
    return _MOMENT.validate_python(value)


def _moment(value: Any) -> str:
    try:
        _moment_of(_string(value))
    except (ValidationError, PydanticCustomError):
        raise _problem(
            "expected an ISO 8601 timestamp with a timezone, e.g. 2026-12-01T15:00:00Z"
        ) from None
    return value  # type: ignore[no-any-return]  # a string, checked above


def _scalar_check(kind: Kind, op: str) -> Callable[[Any], Any]:
    if kind == "boolean":
        return _boolean
    if kind == "time":
        return _moment
    if kind == "number" or op in _ORDER_OPS:
        return _number
    if kind == "string" or op in _TEXT_OPS:
        return _string
    return _string_or_number  # custom eq / ne / in / not_in


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _problem("expected true or false")
    return value


def check_value(kind: Kind, op: str, value: Any) -> Any:
    """The value, checked for this type and operator (``exists`` defaults to true)."""
    if op == "exists":
        return True if value is None else _boolean(value)
    check = _scalar_check(kind, op)
    if op not in ("in", "not_in"):
        return check(value)
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
        raise _problem(f"{op} takes a list of 1 to {MAX_LIST} values")
    for index, item in enumerate(value):
        try:
            check(item)
        except PydanticCustomError as exc:
            raise _problem(f"item {index}: {exc.message()}") from None
    return value


class Node(BaseModel):
    """One condition (``field``, ``op``, ``value``) or a group (``any`` or ``all``)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    @model_serializer(mode="wrap")
    def _as_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A condition as JSON has no group keys, a group no condition keys: stored and read
        back as it was given."""
        dumped: dict[str, Any] = handler(self)
        return {key: value for key, value in dumped.items() if value is not None}

    field: str | None = Field(default=None, description=f"A field; {_SEE_FIELDS}")
    op: str | None = Field(default=None, description="An operator of the field's type")
    value: Any = Field(default=None, description="What to compare with (`exists`: true)")
    any: list[Node] | None = Field(
        default=None, min_length=1, max_length=MAX_GROUP, description="One of these must hold"
    )
    all: list[Node] | None = Field(
        default=None, min_length=1, max_length=MAX_GROUP, description="All of these must hold"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_shape(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # pydantic refuses it
        leaf = any(data.get(key) is not None for key in ("field", "op", "value"))
        groups = [key for key in ("any", "all") if data.get(key) is not None]
        if leaf and groups:
            raise _problem("a condition has field/op/value or any/all, not both")
        if len(groups) > 1:
            raise _problem("a group has any or all, not both")
        if not leaf and not groups:
            raise _problem("expected a condition (field, op, value) or a group (any or all)")
        # Given explicitly, so that the validators below run (and name what is missing); a
        # group leaves them out and they stay None.
        return {"field": None, "op": None, "value": None, **data} if leaf else data

    @field_validator("field")
    @classmethod
    def _known_field(cls, field: str | None) -> str | None:
        if field is None:
            raise _problem(f"a condition needs a field; {_SEE_FIELDS}")
        if kind_of(field) is None:
            raise _problem(f"unknown field {field[:100]!r}; {_SEE_FIELDS}")
        return field

    @field_validator("op")
    @classmethod
    def _known_op(cls, op: str | None, info: ValidationInfo) -> str | None:
        field = info.data.get("field")
        kind = None if field is None else kind_of(field)
        if kind is None:
            return op  # the field is at fault, named there
        allowed = OPERATORS[kind]
        if op not in allowed:
            shown = "a condition needs an op" if op is None else f"{op[:100]!r} is not an op"
            raise _problem(f"{shown} for {field} ({kind}); expected one of {', '.join(allowed)}")
        return op

    @field_validator("value")
    @classmethod
    def _fitting_value(cls, value: Any, info: ValidationInfo) -> Any:
        field, op = info.data.get("field"), info.data.get("op")
        kind = None if field is None else kind_of(field)
        if kind is None or op is None:
            return value  # the field or the op is at fault, named there
        return check_value(kind, op, value)


def _counted(raw: Any) -> Any:
    """Count the conditions and groups of the JSON as given, before any is built: a tree too
    big is refused at the cost of counting up to the limit, not of validating it all."""
    if not isinstance(raw, list):
        return raw  # pydantic refuses it
    count, stack = 0, list(raw)
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise _problem(f"at most {MAX_NODES} conditions and groups in all")
        if isinstance(node, dict):
            for key in ("any", "all"):
                children = node.get(key)
                if isinstance(children, list):
                    stack.extend(children)
    return raw


def _shallow(nodes: list[Node]) -> list[Node]:
    stack = [(node, 1) for node in nodes]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _problem(f"groups nest at most {MAX_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in node.any or node.all or ())
    return nodes


Conditions = Annotated[
    list[Node], Field(max_length=MAX_TOP), BeforeValidator(_counted), AfterValidator(_shallow)
]
_CONDITIONS: TypeAdapter[list[Node]] = TypeAdapter(Conditions)


def parse(raw: Any) -> list[Node]:
    """Conditions from stored JSON (or a request), validated; raises ValidationError."""
    return _CONDITIONS.validate_python(raw)


def to_json(nodes: Sequence[Node]) -> list[dict[str, Any]]:
    """The conditions as JSON, for storing."""
    return [node.model_dump() for node in nodes]


# --- evaluation ------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return json.dumps(value.isoformat())
    if isinstance(value, list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


@dataclass(frozen=True)
class Miss:
    """A condition that did not hold, and the value it saw."""

    path: str
    field: str
    op: str
    value: Any
    seen: Any

    def sentence(self) -> str:
        condition = f"{self.field} {self.op}"
        if not (self.op == "exists" and self.value is True):
            condition += f" {_show(self.value)}"
        return f"{condition} did not hold: it was {_show(self.seen)}"


@dataclass(frozen=True)
class Verdict:
    held: bool
    misses: list[Miss]
    none_held: bool = False  # the misses are an "any" group's, every branch's

    def reason(self) -> str | None:
        if self.held:
            return None
        said = "; ".join(miss.sentence() for miss in self.misses)
        return f"none held: {said}" if self.none_held else said


HELD = Verdict(held=True, misses=[])


def _decimal(value: Any) -> Decimal | None:
    """The value as a number, None when it is not one (a bool is not; a numeric string is)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _fold(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).casefold()


def _same(kind: Kind, seen: Any, value: Any) -> bool:
    if kind == "boolean":
        return bool(seen is value)
    if kind == "number":
        return _decimal(seen) == _decimal(value)
    if kind == "custom" and not isinstance(value, str):
        number = _decimal(seen)
        return number is not None and number == _decimal(value)
    return _fold(seen) == _fold(value)


def _ordered(op: str, seen: Any, value: Any) -> bool:
    left, right = _decimal(seen), _decimal(value)
    if left is None or right is None:
        return False
    return {
        "gt": left > right,
        "gte": left >= right,
        "lt": left < right,
        "lte": left <= right,
    }[op]


def holds(kind: Kind, op: str, value: Any, seen: Any) -> bool:
    """Whether ``seen`` (None when missing) meets ``op`` ``value``."""
    if op == "exists":
        return (seen is not None and seen != "") is value
    if seen is None:
        return op in ("ne", "not_in")
    if op == "eq":
        return _same(kind, seen, value)
    if op == "ne":
        return not _same(kind, seen, value)
    if op in ("in", "not_in"):
        return any(_same(kind, seen, item) for item in value) is (op == "in")
    if op == "contains":
        return _fold(value) in _fold(seen)
    if op == "starts_with":
        return _fold(seen).startswith(_fold(value))
    if op in _ORDER_OPS:
        return _ordered(op, seen, value)
    moment = _moment_of(value)
    return bool(seen < moment if op == "before" else seen > moment)


def _node(node: Node, facts: Facts, path: str) -> Verdict:
    if node.all is not None:
        return evaluate(node.all, facts, f"{path}.all")
    if node.any is not None:
        misses = []
        for index, branch in enumerate(node.any):
            verdict = _node(branch, facts, f"{path}.any.{index}")
            if verdict.held:
                return HELD
            misses.extend(verdict.misses)
        return Verdict(held=False, misses=misses, none_held=True)
    assert node.field is not None and node.op is not None  # a validated condition
    kind = kind_of(node.field)
    assert kind is not None
    seen = facts.value(node.field)
    if holds(kind, node.op, node.value, seen):
        return HELD
    return Verdict(held=False, misses=[Miss(path, node.field, node.op, node.value, seen)])


def evaluate(nodes: Sequence[Node], facts: Facts, prefix: str = "conditions") -> Verdict:
    """Whether all the conditions hold (an empty list does); else the first that does not."""
    for index, node in enumerate(nodes):
        verdict = _node(node, facts, f"{prefix}.{index}")
        if not verdict.held:
            return verdict
    return HELD


# --- the catalogue -------------------------------------------------------------------------


class Example(BaseModel):
    field: str
    op: str
    # Any: a number is both "integer" and "number" in a schema's oneOf
    value: Any = Field(description="A value of the field's type (a list for in / not_in)")


class FieldInfo(BaseModel):
    field: str = Field(description="The name to use in a condition's `field`")
    type: Kind
    title: str
    operators: list[str]
    example: Example = Field(description="A condition on this field")


def catalogue() -> list[FieldInfo]:
    """Every field a condition may name, with its type, operators and an example."""
    known = [
        FieldInfo(
            field=name,
            type=spec.kind,
            title=spec.title,
            operators=list(OPERATORS[spec.kind]),
            example=Example(field=name, op=spec.example[0], value=spec.example[1]),
        )
        for name, spec in FIELDS.items()
    ]
    custom = FieldInfo(
        field=f"{CUSTOM}*",
        type="custom",
        title="A custom field kept on the booking (custom.<key>): text ops compare as text, "
        "gt/gte/lt/lte as numbers",
        operators=list(OPERATORS["custom"]),
        example=Example(field=f"{CUSTOM}company_size", op="gte", value=50),
    )
    return [*known, custom]
