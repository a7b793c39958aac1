"""Conditions: evaluation against a reference written here, validation naming the path, and
the field catalogue over HTTP."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from linktime.api import create_app
from linktime.conditions import Conditions, Facts, Live, evaluate, parse, to_json
from linktime.errors import pydantic_fields
from linktime.models import sample_event
from litestar.testing import TestClient
from pydantic import TypeAdapter, ValidationError

from .conftest import System

# The catalogue as the issue names it: field -> type.
TYPES = {
    **dict.fromkeys(
        [
            *("event.type", "event_type.slug", "event_type.id", "event_type.title"),
            *("booking.uid", "booking.title", "booking.location", "booking.meeting_url"),
            *("booking.notes", "host.name", "host.email", "host.timezone", "invitee.name"),
            *("invitee.email", "invitee.phone", "invitee.timezone", "payment.currency"),
            *("payment.status", "booking.status"),
        ],
        "string",
    ),
    **dict.fromkeys(["guests.count", "payment.amount", "booking.starts_in_hours"], "number"),
    **dict.fromkeys(
        ["booking.confirmed", "booking.paid", "booking.cancelled", "booking.no_show"], "boolean"
    ),
    "booking.start": "time",
    "booking.end": "time",
}
OPS = {
    "string": ["eq", "ne", "in", "not_in", "contains", "starts_with", "exists"],
    "number": ["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists"],
    "boolean": ["eq", "ne", "exists"],
    "time": ["before", "after", "exists"],
}
OPS["custom"] = sorted(set(OPS["string"]) | set(OPS["number"]))
ALL_OPS = sorted({op for ops in OPS.values() for op in ops})
CUSTOM_KEYS = ["company", "Seats", "a.b-c_1", "absent"]
CUSTOM_FIELDS = [f"custom.{key}" for key in CUSTOM_KEYS]
ZONES = ["UTC", "Europe/Berlin", "America/New_York"]
WORDS = ["Intro", "intro", "INTRO-call", "Straße", "STRASSE", "", "5", "5.0", "nan", "abc"]
ORDER = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
T0 = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def kind(field: str) -> str:
    return "custom" if field.startswith("custom.") else TYPES[field]


# --- the reference evaluator --------------------------------------------------------------------


def number(x: Any) -> Decimal | None:
    if isinstance(x, bool):
        return None
    try:
        d = Decimal(str(x))
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def text(x: Any) -> str:
    return ("true" if x else "false") if isinstance(x, bool) else str(x).casefold()


def ref_leaf(kind: str, op: str, value: Any, seen: Any) -> bool:
    if op == "exists":
        return bool(seen is not None and seen != "") is value
    if seen is None:
        return op in ("ne", "not_in")

    def equal(v: Any) -> bool:
        if kind == "boolean":
            return seen is v
        if kind == "number" or (kind == "custom" and not isinstance(v, str)):
            return number(seen) is not None and number(seen) == number(v)
        return text(seen) == text(v)

    if op in ORDER:
        a, b = number(seen), number(value)
        return a is not None and b is not None and bool(ORDER[op](a, b))
    moment = datetime.fromisoformat(value) if op in ("before", "after") else None
    cases: dict[str, Callable[[], bool]] = {
        "eq": lambda: equal(value),
        "ne": lambda: not equal(value),
        "in": lambda: any(map(equal, value)),
        "not_in": lambda: not any(map(equal, value)),
        "contains": lambda: text(value) in text(seen),
        "starts_with": lambda: text(seen).startswith(text(value)),
        "before": lambda: bool(seen < moment),
        "after": lambda: bool(seen > moment),
    }
    return cases[op]()


def ref_all(nodes: list[dict[str, Any]], seen: dict[str, Any], path: str) -> list[str] | None:
    """None when every node holds, else the paths of the misses reported."""
    for index, node in enumerate(nodes):
        misses = ref_node(node, seen, f"{path}.{index}")
        if misses is not None:
            return misses
    return None


def ref_node(node: dict[str, Any], seen: dict[str, Any], path: str) -> list[str] | None:
    if "all" in node:
        return ref_all(node["all"], seen, f"{path}.all")
    if "any" in node:
        misses: list[str] = []
        for index, branch in enumerate(node["any"]):
            branch_misses = ref_node(branch, seen, f"{path}.any.{index}")
            if branch_misses is None:
                return None
            misses += branch_misses
        return misses
    field = node["field"]
    held = ref_leaf(kind(field), node["op"], node.get("value", True), seen.get(field))
    return None if held else [path]


# --- strategies -------------------------------------------------------------------------------

words = st.sampled_from(WORDS) | st.text(max_size=6)
maybe_words = st.none() | words
numbers = (
    st.integers(-5, 60)
    | st.floats(-100, 100, allow_nan=False)
    | st.sampled_from([0, 24, 50, 50.0, 49.99, 10**15])
)


@st.composite
def booking_facts(draw: st.DrawFn) -> tuple[Facts, dict[str, Any]]:
    """Facts, and the value each field should be seen as (missing fields left out)."""
    seen: dict[str, Any] = {}

    def pick(field: str, strategy: st.SearchStrategy[Any]) -> Any:
        value = draw(strategy)
        if value is not None:
            seen[field] = value
        return value

    def person(role: str, phone: bool) -> dict[str, Any] | None:
        if not draw(st.booleans()):
            return None
        return {
            "name": pick(f"{role}.name", words),
            "email": pick(f"{role}.email", maybe_words),
            "phone": pick(f"{role}.phone", maybe_words) if phone else None,
            "timezone": pick(f"{role}.timezone", st.sampled_from(ZONES)),
        }

    event_type = None
    if draw(st.booleans()):
        ident = draw(st.none() | st.integers(0, 9) | words)
        if ident is not None:
            seen["event_type.id"] = str(ident)
        event_type = {
            "id": ident,
            "slug": pick("event_type.slug", maybe_words),
            "title": pick("event_type.title", maybe_words),
        }
    payment = None
    if draw(st.booleans()):
        payment = {
            "amount": pick("payment.amount", st.sampled_from(["50.00", "49.99", "0", "1E+3"])),
            "currency": pick("payment.currency", st.sampled_from(["USD", "usd", "EUR"])),
        }
        seen["payment.amount"] = Decimal(payment["amount"])
        status = pick("payment.status", maybe_words)
        if status is not None:
            payment["status"] = status
    types = ["booking.created", "booking.cancelled", "booking.rescheduled"]
    event_type_name = pick(
        "event.type", st.sampled_from(types + ["payment.received"] * bool(payment))
    )
    guests = draw(st.integers(0, 3))
    seen["guests.count"] = guests
    custom = draw(
        st.dictionaries(
            st.sampled_from(CUSTOM_KEYS[:-1]),
            st.none() | words | numbers | st.booleans(),
        )
    )
    seen.update({f"custom.{key}": value for key, value in custom.items() if value is not None})
    start = draw(st.datetimes(datetime(2026, 1, 1), datetime(2027, 1, 1), timezones=st.just(UTC)))
    end = start + timedelta(minutes=draw(st.integers(0, 600)))
    booking = {
        "uid": pick("booking.uid", st.sampled_from(["bk_1", "BK_1", "Intro"])),
        "title": pick("booking.title", maybe_words),
        "event_type": event_type,
        "start": start,
        "end": end,
        "location": pick("booking.location", maybe_words),
        "meeting_url": pick("booking.meeting_url", maybe_words),
        "notes": pick("booking.notes", maybe_words),
        "host": person("host", phone=False),
        "invitee": person("invitee", phone=True),
        "guests": [{"email": f"g{n}@example.com"} for n in range(guests)],
        "payment": payment,
        "custom_fields": custom,
    }
    event = sample_event(event_type_name, booking=booking)
    status = pick("booking.status", st.sampled_from(["accepted", "pending", "cancelled"]))
    live = Live(status, start, end, draw(st.booleans()), draw(st.booleans()))
    now = start + timedelta(minutes=draw(st.integers(-6000, 6000)))
    seen.update(
        {
            "booking.confirmed": status == "accepted",
            "booking.cancelled": status == "cancelled",
            "booking.paid": live.paid,
            "booking.no_show": live.no_show,
            "booking.start": start,
            "booking.end": end,
            "booking.starts_in_hours": (start - now).total_seconds() / 3600,
        }
    )
    return Facts(event, live, now), seen


ZONES_OFFSET = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)


def moments(near: datetime, minutes: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda m, zone: (near + timedelta(minutes=m)).astimezone(zone).isoformat(),
        minutes,
        ZONES_OFFSET,
    )


def as_json_number(d: Decimal) -> int | float:
    return int(d) if d == d.to_integral_value() else float(d)


def near(seen: Any, kind: str, op: str) -> st.SearchStrategy[Any]:
    """Values made from what a field is seen as (equal, recased, a part of it, a neighbour),
    so that conditions hold about as often as not."""
    if seen is None or kind == "boolean":
        return st.nothing()
    if kind == "time":
        return moments(seen, st.sampled_from([-1, 0, 1]))
    if kind == "number" or op in ORDER:
        n = number(seen)
        if n is None:
            return st.nothing()
        neighbours = [m for m in (n - 1, n, n + 1) if abs(m) <= 10**15]
        return st.sampled_from(neighbours).map(as_json_number)
    s = text(seen) if isinstance(seen, bool) else str(seen)
    recased = st.sampled_from([s, s.upper(), s.casefold(), s[:2], s[1:3], s + "x"])
    n = number(seen)
    if n is None or kind == "string" or op in ("contains", "starts_with") or abs(n) > 10**15:
        return recased
    return recased | st.just(as_json_number(n))


def scalars(kind: str, op: str, seen: Any = None) -> st.SearchStrategy[Any]:
    if kind == "boolean":
        return st.booleans()
    anywhere: st.SearchStrategy[Any]
    if kind == "time":
        anywhere = moments(datetime(2026, 7, 1, tzinfo=UTC), st.integers(-576_000, 576_000))
    elif kind == "number" or op in ORDER:
        anywhere = numbers
    elif kind == "string" or op in ("contains", "starts_with"):
        anywhere = words
    else:
        anywhere = words | numbers
    return near(seen, kind, op) | anywhere


@st.composite
def leaves(draw: st.DrawFn, seen: dict[str, Any]) -> dict[str, Any]:
    present = st.sampled_from(sorted(seen)) if seen else st.nothing()
    field = draw(present | st.sampled_from([*TYPES, *CUSTOM_FIELDS]))
    op = draw(st.sampled_from(OPS[kind(field)]))
    if op == "exists":
        value = draw(st.none() | st.booleans())  # None: left out, true by default
        return {"field": field, "op": op} | ({} if value is None else {"value": value})
    scalar = scalars(kind(field), op, seen.get(field))
    value = draw(st.lists(scalar, min_size=1, max_size=4) if op in ("in", "not_in") else scalar)
    return {"field": field, "op": op, "value": value}


def nodes(seen: dict[str, Any], depth: int = 1) -> st.SearchStrategy[dict[str, Any]]:
    if depth == 4:
        return leaves(seen)
    groups = st.builds(
        lambda key, children: {key: children},
        st.sampled_from(["any", "all"]),
        st.lists(st.deferred(lambda: nodes(seen, depth + 1)), min_size=1, max_size=2),
    )
    return leaves(seen) | groups


def condition_lists(seen: dict[str, Any], min_size: int = 0) -> st.SearchStrategy[Any]:
    return st.lists(nodes(seen), min_size=min_size, max_size=3)


# --- evaluation ---------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(facts_seen=booking_facts(), data=st.data())
def test_evaluation_matches_the_reference(
    facts_seen: tuple[Facts, dict[str, Any]], data: st.DataObject
) -> None:
    facts, seen = facts_seen
    raw = data.draw(condition_lists(seen, min_size=1))
    for field in [*TYPES, *CUSTOM_FIELDS]:
        assert facts.value(field) == seen.get(field), field
    verdict = evaluate(parse(raw), facts)
    expected = ref_all(raw, seen, "conditions")
    assert verdict.held is (expected is None)
    assert [miss.path for miss in verdict.misses] == (expected or [])
    assert all(miss.seen == seen.get(miss.field) for miss in verdict.misses)
    assert (verdict.reason() is None) is verdict.held
    for path, holder, index in node_paths(raw, "conditions"):
        alone = evaluate(parse([holder[index]]), facts)
        assert alone.held is (ref_node(holder[index], seen, "conditions.0") is None), path


def test_a_verdict_names_the_condition_and_what_it_saw() -> None:
    event = sample_event("payment.received")
    facts = Facts(event, Live.of_event(event), T0 - timedelta(hours=30))
    paid = {"field": "booking.paid", "op": "eq", "value": False}
    phone = {"field": "custom.phone", "op": "exists"}
    soon = {"field": "booking.starts_in_hours", "op": "lt", "value": 24}

    verdict = evaluate(parse([{"field": "event.type", "op": "ne", "value": "x"}, paid]), facts)
    assert [(m.path, m.seen) for m in verdict.misses] == [("conditions.1", True)]
    assert verdict.reason() == "booking.paid eq false did not hold: it was true"

    verdict = evaluate(parse([{"any": [phone, soon]}]), facts, prefix="settings.conditions")
    assert [m.path for m in verdict.misses] == [
        "settings.conditions.0.any.0",
        "settings.conditions.0.any.1",
    ]
    assert verdict.reason() == (
        "none held: custom.phone exists did not hold: it was missing; "
        "booking.starts_in_hours lt 24 did not hold: it was 30"
    )
    assert evaluate([], facts).held


def test_live_of_an_event_says_cancelled_and_paid() -> None:
    assert Live.of_event(sample_event("booking.cancelled")).status == "cancelled"
    assert Live.of_event(sample_event("payment.received")).paid
    created = Live.of_event(sample_event())
    assert (created.status, created.paid, created.no_show) == ("accepted", False, False)


# --- validation ---------------------------------------------------------------------------------


def node_paths(nodes: list[dict[str, Any]], path: str) -> Iterator[tuple[str, list[Any], int]]:
    """Every node's path, with the list holding it and its index there."""
    for index, node in enumerate(nodes):
        yield f"{path}.{index}", nodes, index
        for key in ("any", "all"):
            if key in node:
                yield from node_paths(node[key], f"{path}.{index}.{key}")


def wrong_values(kind: str, op: str) -> st.SearchStrategy[Any]:
    if op == "exists":
        return st.sampled_from(["yes", "true", 1, 0, [True]])
    if op in ("in", "not_in"):
        good = scalars(kind, op)
        return st.sampled_from([[], "x", 5, True]) | st.builds(
            lambda items, bad: [*items, bad],
            st.lists(good, max_size=2),
            wrong_values(kind, "eq").filter(lambda v: not isinstance(v, list)),
        )
    if kind == "boolean":
        return st.sampled_from(["true", "false", 1, 0, None, [True]])
    if kind == "time":
        return st.sampled_from(["2026-12-01T15:00:00", "17", 17, "next tuesday", None, True])
    common = st.sampled_from([None, {"a": 1}, [1], float("inf")])
    if kind == "number" or op in ORDER:
        return common | st.sampled_from([True, False, "5", 10**16])
    if kind == "string" or op in ("contains", "starts_with"):
        return common | st.sampled_from([5, True, "x" * 501])
    return common | st.sampled_from([True, "x" * 501])


@st.composite
def broken(draw: st.DrawFn) -> tuple[list[dict[str, Any]], str]:
    """A valid list with one node made invalid, and the path its error must name."""
    raw = draw(condition_lists({}, min_size=1))
    path, holder, index = draw(st.sampled_from(list(node_paths(raw, "conditions"))))
    field = draw(st.sampled_from([*TYPES, *CUSTOM_FIELDS]))
    ops = OPS[kind(field)]
    fault = draw(st.sampled_from(["field", "op", "value", "mixed", "empty"]))
    if fault == "field":
        unknown = st.text(max_size=30).filter(
            lambda f: f not in TYPES and not re.fullmatch(r"custom\.[A-Za-z0-9_.-]{1,100}", f)
        )
        holder[index] = {"field": draw(unknown), "op": "eq", "value": "x"}
    elif fault == "op":
        not_for_type = st.sampled_from(ALL_OPS) | st.text(max_size=10)
        holder[index] = {"field": field, "op": draw(not_for_type.filter(lambda o: o not in ops))}
    elif fault == "value":
        op = draw(st.sampled_from(ops))
        holder[index] = {"field": field, "op": op, "value": draw(wrong_values(kind(field), op))}
    elif fault == "mixed":
        leaf, children = draw(leaves({})), [draw(leaves({}))]
        holder[index] = draw(
            st.sampled_from(
                [
                    {**leaf, "any": children},
                    {**leaf, "all": children},
                    {"any": children, "all": children},
                ]
            )
        )
    else:
        holder[index] = {}
    return raw, path if fault in ("mixed", "empty") else f"{path}.{fault}"


@settings(max_examples=400, deadline=None)
@given(case=broken())
def test_an_invalid_condition_is_refused_naming_its_path(
    case: tuple[list[dict[str, Any]], str],
) -> None:
    raw, path = case
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(Conditions).validate_python(raw)
    assert [error.field for error in pydantic_fields(caught.value, "conditions")] == [path]


def with_defaults(node: dict[str, Any]) -> dict[str, Any]:
    """The node as it is stored: an ``exists`` without a value means true."""
    if "any" in node or "all" in node:
        return {key: [with_defaults(child) for child in nodes] for key, nodes in node.items()}
    return {"value": True, **node} if node["op"] == "exists" else node


@settings(max_examples=200, deadline=None)
@given(raw=condition_lists({}))
def test_a_valid_condition_is_accepted_and_stored_as_given(raw: list[dict[str, Any]]) -> None:
    stored = to_json(parse(raw))
    assert stored == [with_defaults(node) for node in raw]
    assert to_json(parse(stored)) == stored


def test_too_many_or_too_deep_is_refused() -> None:
    leaf = {"field": "booking.paid", "op": "eq", "value": False}
    for raw in (
        [leaf] * 21,
        [{"any": [leaf] * 20}, {"all": [leaf] * 20}, {"any": [leaf] * 10}],
        [{"any": [{"all": [{"any": [{"all": [leaf]}]}]}]}],
    ):
        with pytest.raises(ValidationError) as caught:
            parse(raw)
        assert [error.field for error in pydantic_fields(caught.value, "conditions")] == [
            "conditions"
        ]


# --- the catalogue over HTTP ----------------------------------------------------------------------


@pytest.fixture
def client(make_system: Callable[..., System]) -> Iterator[tuple[System, TestClient[Any]]]:
    system = make_system()
    with TestClient(create_app(system.hub)) as test_client:
        yield system, test_client


def test_the_field_catalogue_lists_every_field(client: tuple[System, TestClient[Any]]) -> None:
    system, http = client
    assert http.get("/v1/conditions/fields").status_code == 401
    key = system.account().api_key
    r = http.get("/v1/conditions/fields", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    fields = {f["field"]: f for f in r.json()["fields"]}
    assert fields.keys() == {*TYPES, "custom.*"}
    for name, info in fields.items():
        expected = "custom" if name == "custom.*" else TYPES[name]
        assert info["type"] == expected and sorted(info["operators"]) == sorted(OPS[expected])
        assert info["title"]
        parse([info["example"]])  # every example is a condition one can save
