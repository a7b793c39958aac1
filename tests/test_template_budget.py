"""The cost budget of message templates: the reproduced inputs of issue 11 (and the other ways a
template or a booking can make a render expensive) are stopped with ``template_budget``, at
save (a 422 naming the field and line), at send (a permanent step failure through the engine,
whatever the plugin catches) and in dry runs; any render either stays within the budget's
counters or is stopped."""

from __future__ import annotations

import contextlib
import gc
import re
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from linktime.accounts import NewAccount, create_account
from linktime.actions import ActionContext, ActionType, Result
from linktime.api import create_app
from linktime.engine import Hub
from linktime.models import BookingEvent, sample_event
from linktime.template_budget import (
    MAX_CHARS,
    MAX_CPU_SECONDS,
    MAX_OUTPUT,
    MAX_SOURCE,
    MAX_STEPS,
    MAX_TOKENS,
    Allowance,
    Budget,
    TemplateBudgetError,
    cpu_time,
    shared,
)
from linktime.templating import (
    TemplateError,
    TemplateStr,
    check_template,
    checks_of_one_save,
    render,
)
from litestar.testing import TestClient
from pydantic import BaseModel, field_validator

from .conftest import fast_settings, registry_with

NESTED_RANGES = (
    "{% for a in range(500) %}{% for b in range(500) %}{% for c in range(500) %}x"
    "{% endfor %}{% endfor %}{% endfor %}"
)
CENTER = '{{ "x"|center(50000000) }}'
NOTES_SQUARED = "{% for a in booking.notes %}{% for b in booking.notes %}x{% endfor %}{% endfor %}"


def with_notes(notes: str) -> BookingEvent:
    return sample_event(booking={**sample_event().booking.model_dump(), "notes": notes})


LONG_NOTES = with_notes("n" * 6000)  # what a booker may send: notes are up to 10,000 characters


# --- render and save ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "reason"),
    [(NESTED_RANGES, f"more than {MAX_STEPS} steps"), (CENTER, "center(50000000)")],
    ids=["nested-ranges", "center"],
)
def test_the_reproduced_templates_are_refused_when_saved(source: str, reason: str) -> None:
    with pytest.raises(TemplateBudgetError) as refused:
        check_template(source)
    assert str(refused.value).startswith("line 1: template budget exceeded: ")
    assert reason in str(refused.value)


def test_a_booker_cannot_make_a_saved_template_expensive() -> None:
    # Fine on the sample booking (21-character notes): it is saved...
    assert check_template(NOTES_SQUARED) == NOTES_SQUARED
    assert render(NOTES_SQUARED, sample_event()) == "x" * 21**2
    # ...and stopped when a booker sends long notes, rather than rendering 36 million x's.
    with pytest.raises(TemplateBudgetError, match=r"^line 1: template budget exceeded: more than"):
        render(NOTES_SQUARED, LONG_NOTES)


HOSTILE = {
    # every loop iteration counts, nested, recursive, or skipped by the loop's `if`
    "skipped-items": "{% for a in range(9000) %}{% for b in range(9000) if b < 0 %}{% endfor %}"
    "{% endfor %}",
    "recursive-loop": "{% for x in [1, 2, 3] recursive %}{{ loop([1, 2, 3]) }}{% endfor %}",
    "macro-recursion": "{% macro m(n) %}{{ m(n) }}{{ m(n) }}{% endmacro %}{{ m(1) }}",
    "range": "{{ range(10**9) | list }}",
    # output counted while it is produced, and captured blocks as they fill
    "output": "{% for a in range(9000) %}{{ booking.notes }}{% endfor %}",
    "captured-block": "{% set s %}{% for a in range(9000) %}{{ booking.notes }}{% endfor %}"
    "{% endset %}{{ s|length }}",
    "filter-block": "{% filter upper %}{% for a in range(9000) %}{{ booking.notes }}{% endfor %}"
    "{% endfilter %}",
    # values that double: `~`, `+`, `*`, lists of lists turned into text
    "concat-doubling": "{% set ns = namespace(s='xx') %}{% for i in range(40) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "plus-doubling": "{% set ns = namespace(s=[1, 2]) %}{% for i in range(40) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "repetition": "{{ 'x' * 1000000000 }}",
    "nested-repetition": "{% set a = [booking.notes] * 10 %}{{ [a] * 10 }}",
    "shared-lists": "{% set ns = namespace(l=['x']) %}{% for i in range(30) %}"
    "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
    "shared-lists-json": "{% set ns = namespace(l=['x']) %}{% for i in range(30) %}"
    "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l|tojson }}",
    "shared-lists-compared": "{% set ns = namespace(a=['x'], b=['x']) %}{% for i in range(40) %}"
    "{% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}{{ ns.a == ns.b }}",
    "shared-tuples-hashed": "{% set ns = namespace(t=('x',)) %}{% for i in range(40) %}"
    "{% set ns.t = (ns.t, ns.t) %}{% endfor %}{{ {ns.t: 1}|length }}",
    "shared-lists-added": "{% set ns = namespace(l=[[booking.notes] * 9]) %}"
    "{% for i in range(20) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}",
    "integer-squaring": "{% set ns = namespace(n=3) %}{% for i in range(40) %}"
    "{% set ns.n = ns.n * ns.n %}{% endfor %}{{ ns.n > 0 }}",
    "power": "{{ (((2 ** 64) ** 64) ** 64) > 0 }}",
    # numeric arguments of filters, methods and formatting
    "indent": "{{ booking.notes|wordwrap(1)|indent(1000) }}",
    "wordwrap": "{{ booking.notes|wordwrap(1, wrapstring='-' * 50000) }}",
    "replace": "{{ booking.notes|replace('n', 'x' * 1000) }}",
    "format-filter": "{{ '%50000000s'|format('x') }}",
    "percent": "{{ '%*d' % (50000000, 1) }}",
    "str-format": "{{ '{:>50000000}'.format('x') }}",
    "str-format-nested": "{{ '{:>{}}'.format('x', 50000000) }}",
    "ljust": "{{ 'x'.ljust(50000000) }}",
    "expandtabs": "{{ ('\t' * 50000).expandtabs(50000) }}",
    "str-replace": "{{ booking.notes.replace('n', booking.notes) }}",
    "str-join": "{{ booking.notes.join(booking.notes) }}",
    "batch": "{{ [1]|batch(50000000, 0)|list|length }}",
    "slice": "{{ [1]|slice(50000000)|list|length }}",
    "join": "{{ ([booking.notes] * 10)|join(booking.notes) }}",
    "sum": "{{ range(6000)|batch(2)|sum(start=[])|length }}",  # adding lists is quadratic
    "tojson-indent": "{{ booking|tojson(indent=50000000) }}",
    "urlize-links": "{{ ('x.io ' * 19000)|urlize }}",  # each link grows into an <a> tag
    # filters that go word by word in Python: a step per word
    "urlize-words": "{{ ('ab ' * 30000)|urlize }}",
    "title-words": "{{ ('ab ' * 30000)|title }}",
    # cheap steps that each cost CPU: the thread's CPU time is checked at the counters
    "cpu": "{% for a in range(9000) %}{% set n = booking.notes|wordcount %}{% endfor %}",
    # --- a review's findings: widths read with nested fields substituted, before formatting
    "format-nested-str-width": '{{ "{:{}}".format("a", "999999999") }}',
    "format-newline-fill": '{{ "{:\n>99999999}".format(1) }}',
    "format-map-nested": '{{ "{x:{w}}".format_map({"x": "a", "w": "999999999"}) }}',
    "format-named-width": '{{ "{:{w}}".format("a", w="999999999") }}',
    "format-precision": '{{ "{:.99999999f}".format(1) }}',
    "format-in-width": '{{ "{:{}}".format("a", "{:>7}".format(9999999)) }}',
    "format-repr": '{{ "{!a}".format("\u0100" * 50000) }}',
    "percent-star": '{{ "%*d" % (999999999, 1) }}',
    "percent-key": '{{ "%(x)999999999s" % {"x": 1} }}',
    "percent-nested-key": '{{ "%(a(b)99999999s" % {"a(b": 1} }}',
    "percent-precision": '{{ "%.99999999f" % 1 }}',
    "format-filter-key": '{{ "%(x)999999999s"|format(x=1) }}',
    "strftime-long": '{{ ("{:" ~ "%c" * 40000 ~ "}").format(booking.start) }}',
    "strftime-width": '{{ booking.start.strftime("%099999999d") }}',
    "localtime-width": '{{ booking.start|localtime("UTC", "%099999999d") }}',
    # single C calls: charged for their work before they run, or refused
    "idna": '{{ ("a\u0100." * 30000).encode("idna") }}',
    "idna-notes": '{{ booking.notes.encode("idna") }}',
    "punycode": '{{ ("x" * 99000).encode().decode("punycode") }}',
    "encode-escapes": '{{ booking.notes.encode("ascii", "backslashreplace") }}',
    "wordwrap-long-word": '{{ ("x" * 49000)|wordwrap(1) }}',
    "title-brackets": '{{ ("a(" * 45000)|title }}',
    "striptags": '{{ ("<>" * 45000)|striptags }}',
    "strip-chars": "{{ ('x' * 90000).strip(booking.notes * 8 ~ 'x') }}",
    "trim-chars": "{{ ('x' * 90000)|trim(booking.notes * 8 ~ 'x') }}",
    "urlize-brackets": '{{ ("(" * 90000)|urlize }}',
    "split-words": "{% for i in range(30) %}{% set n = (booking.notes * 15).split('n') %}"
    "{% endfor %}",
}

# --- a second review's findings: comparisons, big numbers, templates without loops
IN_RANGE = "{% set r = range(10000) %}" + "{{ 0.5 in r }}" * 50
COMPARING = {
    "power-in-range": "{% set d = payment.amount ** 100000 %}{% set r = range(10000) %}"
    + "{{ d in r }}" * 50,
    "in-range": IN_RANGE,
    "not-in-range": "{% set r = range(10000) %}" + "{{ 0.5 not in r }}" * 50,
    "in-test": "{% set r = range(10000) %}" + "{{ 0.5 is in r }}" * 50,
    "chained": "{% set r = range(10000) %}" + "{{ 0 < 1 < 2 and 0.5 in r }}" * 50,
    "select-in": "{{ ([0.5] * 200)|select('in', range(10000))|list|length }}",
    "sort": "{{ ([payment.amount, 1e300] * 1600)|sort|first }}",
    "power-decimal": "{{ payment.amount ** 100000 }}",
}


def unclocked() -> Budget:
    """A budget whose clocks never run out: what stops a render is the work charged to it."""
    budget = Budget()
    budget.deadline = budget.wall_deadline = float("inf")
    return budget


@pytest.mark.parametrize("source", COMPARING.values(), ids=COMPARING.keys())
def test_comparisons_are_charged_and_big_numbers_bounded(source: str) -> None:
    event = sample_event("payment.received")
    stopped_within_memory(source, event)
    # Charged before they run (not caught by the clock after the fact).
    with pytest.raises(TemplateBudgetError, match=r"more than 10000 steps|1228 digits"):
        render(source, event, budget=unclocked())


def with_booking(**fields: Any) -> BookingEvent:
    booking = sample_event("payment.received").booking.model_dump()
    return sample_event("payment.received", booking={**booking, **fields})


# A field only some bookings carry, compared with: each of its items costs a comparison.
BOOKER_LIST = "{% if booking.foo is defined %}{{ payment.amount in booking.foo }}{% endif %}"


def test_a_booker_cannot_make_a_comparison_expensive() -> None:
    assert check_template(BOOKER_LIST) == BOOKER_LIST
    assert render(BOOKER_LIST, with_booking(foo=[1e300] * 3)) == "False"
    stopped_within_memory(BOOKER_LIST, with_booking(foo=[1e300] * 30000))
    with pytest.raises(TemplateBudgetError, match="more than 10000 steps"):
        render(BOOKER_LIST, with_booking(foo=[1e300] * 30000), budget=unclocked())


def test_ordinary_comparisons_render_as_python_does() -> None:
    source = (
        "{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 'a' in 'abc' }} {{ 2 is in [1, 2] }} "
        "{{ 3 not in [1] }} {{ [3, 1, 2]|sort }} {{ [1, 2, 2]|unique|list }} {{ [1, 5]|max }} "
        "{{ [1, 2, 3]|select('lt', 3)|list }} {{ booking.status == 'accepted' }} "
        "{{ 1 < undefined_if_reached if 0 > 1 else 'short' }}"
    )
    assert render(source, sample_event()) == (
        "True False True True True [1, 2, 3] [1, 2] 5 [1, 2] True short"
    )
    # A chain stops at its first false comparison: the rest is never evaluated.
    assert render("{{ 2 < 1 < booking.nothing }}", sample_event()) == "False"


@pytest.mark.parametrize("limit", ["deadline", "wall_deadline"])
def test_a_template_without_loops_or_calls_is_timed_too(limit: str) -> None:
    budget = Budget()
    setattr(budget, limit, 0.0)  # no time left on either clock
    with pytest.raises(TemplateBudgetError, match=r"^line 1: template budget exceeded: more than"):
        render("Hi {{ attendee_name }}", sample_event(), budget=budget)


# A second review: 50,000-character templates that cost 220-500 ms and up to 99 MB to compile.
LONG_SOURCES = {
    "fields": "{{booking.uid}}" * 3333,
    "ifs": "{% if 1 %}x{% endif %}" * 2272,
    "macros": "".join(f"{{% macro m{i}() %}}x{{% endmacro %}}" for i in range(1500)),
    "text": "Hi {{ attendee_name }}" + "x" * MAX_SOURCE,
    # the review's first reproduction, 49,964 characters: 201 after ~12.7 s at save before
    "comparisons": "{% set d = payment.amount ** 100000 %}{% set r = range(10000) %}"
    + "{{d in r}}" * 4990,
}


@pytest.mark.parametrize("source", LONG_SOURCES.values(), ids=LONG_SOURCES.keys())
def test_a_template_too_long_to_compile_cheaply_is_refused_before_compiling(source: str) -> None:
    with pytest.raises(TemplateBudgetError, match=r"^template budget exceeded: a template of more"):
        check_template(source)


def test_a_template_within_the_token_limit_compiles() -> None:
    source = "{{ 1 }}" * (MAX_TOKENS // 3)  # 3 tokens each: {{, 1 and }}
    assert check_template(source) == source
    with pytest.raises(TemplateBudgetError, match=f"more than {MAX_TOKENS} tokens"):
        check_template(source + "x")  # a run of text is one more


# Notes a booker sends (up to 10,000 characters), shaped for the templates below.
BOOKER = {
    "format-width-from-notes": (
        '{% if booking.notes[:1] == "9" %}{{ "{:{}}".format("", booking.notes) }}{% endif %}Hi',
        "999999999",
    ),
    "wordwrap-notes": ("{{ booking.notes|wordwrap(1) }}", "x" * 10000),
    "strftime-from-notes": ("{{ booking.start.strftime(booking.notes) }}", "%c" * 5000),
}


MEMORY_BOUND = 10_000_000  # bytes a stopped render may hold at its peak (bench/: the figures)


def stopped_within_memory(source: str, event: BookingEvent) -> TemplateBudgetError:
    """The render is stopped by the budget, and tracemalloc saw it hold under 10 MB."""
    tracemalloc.start()
    try:
        with pytest.raises(TemplateBudgetError) as stopped:
            render(source, event)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert re.match(r"^line [0-9]+: template budget exceeded: ", str(stopped.value))
    assert peak < MEMORY_BOUND, f"peak {peak / 1e6:.1f} MB"
    return stopped.value


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_every_way_to_grow_a_render_is_stopped(source: str) -> None:
    stopped_within_memory(source, LONG_NOTES)


@pytest.mark.parametrize(("source", "notes"), BOOKER.values(), ids=BOOKER.keys())
def test_a_booker_cannot_grow_a_saved_template_either(source: str, notes: str) -> None:
    assert check_template(source) == source  # fine on the samples: saved
    stopped_within_memory(source, with_notes(notes))


@pytest.mark.parametrize(
    "source",
    [
        "{{ payment.amount|int }}",
        '{{ "%d" % payment.amount }}',
        '{{ "{:f}".format(payment.amount) }}',
        '{{ "{:,}".format(payment.amount) }}',
    ],
)
def test_an_absurd_amount_is_not_turned_into_an_absurd_integer(source: str) -> None:
    booking = sample_event().booking.model_dump()
    amount = {**booking["payment"], "amount": "1e999999"}
    event = sample_event(booking={**booking, "payment": amount})
    assert render("{{ payment.amount }}", event) == "1E+999999"
    stopped_within_memory(source, event)


@pytest.mark.parametrize(
    ("source", "out"),
    [
        ('{{ "{:>{}}|{:{w}.{p}}".format("a", 3, "bcd", w=4, p=2) }}', "  a|bc  "),
        ('{{ "{:{}}".format("a", "3") }}', "a  "),
        ('{{ "{:\n>3}".format(1) }}', "\n\n1"),
        ('{{ "{x:{w}}".format_map({"x": "a", "w": 2}) }}', "a "),
        (
            '{{ "{:,.2f} {:08.3f} {:x} {!r}".format(1234.5, 2, 255, "a") }}',
            "1,234.50 0002.000 ff 'a'",
        ),
        (
            "{{ '%-4s|%*d|%(a(b)s' % {'a(b': 1} if false else '%-4s|%*d|%.1f' % ('a', 3, 5, 2) }}",
            "a   |  5|2.0",
        ),
        ('{{ "%(x)3s"|format(x=1) }}', "  1"),
        ('{{ "{:%Y-%m-%d %-I%p}".format(booking.start) }}', "2026-12-01 3PM"),
        (
            '{{ booking.start.strftime("%A %-d") }} {{ booking.start|localtime("UTC", "%H:%M") }}',
            "Tuesday 1 15:00",
        ),
        (
            '{{ "Ada Ā".encode("utf-8").decode("UTF8") }} {{ "é".encode("latin-1")|length }}',
            "Ada Ā 1",
        ),
        (
            "{{ 'a-b c'|title }} {{ '<b>x</b>'|striptags }} {{ ' x '|trim }} "
            "{{ 'https://x.io'|urlize }}",
            'A-B C x x <a href="https://x.io" rel="noopener">https://x.io</a>',
        ),
        (
            "{{ 'a b'.split() }} {{ 'x'.center(3) }}|{{ '1'.zfill(3) }} {{ ','.join(['a', 'b']) }}",
            "['a', 'b']  x |001 a,b",
        ),
    ],
)
def test_formatting_and_methods_within_the_budget_render_as_python_does(
    source: str, out: str
) -> None:
    assert render(source, sample_event()) == out


@pytest.mark.parametrize(
    "source",
    [
        "{{ (1).to_bytes(50000000, 'big')|length }}",
        "{{ 'abc'.maketrans('a', 'b') }}",
        "{{ booking.copy() }}",
        "{{ booking.start.fromtimestamp(0) }}",
        "{{ ('x'|e).unescape() }}",
    ],
)
def test_only_listed_methods_of_strings_numbers_dicts_and_dates_are_reachable(source: str) -> None:
    with pytest.raises(TemplateError, match="not allowed in a template: access to attribute"):
        render(source, sample_event())


def test_the_wall_clock_is_checked_at_the_counters() -> None:
    budget = Budget()
    budget.wall_deadline = time.monotonic()  # no time left on the clock
    with pytest.raises(TemplateBudgetError, match=r"s of wall-clock time"):
        render("{% for a in range(100) %}{% endfor %}", sample_event(), budget=budget)


def test_a_call_is_refused_before_it_runs_when_its_work_would_not_fit() -> None:
    # Half the CPU time gone: a filter charged for more than what is left is refused up front
    # (it would have fitted in a whole budget: the same render passes on a fresh one).
    source = "{{ booking.notes|wordwrap(3) }}"
    event = with_notes("x" * 3000)
    assert render(source, event).count("\n") == 999
    budget = Budget()
    budget.deadline = cpu_time() + MAX_CPU_SECONDS / 10
    with pytest.raises(TemplateBudgetError, match=r"ms of CPU time"):
        render(source, event, budget=budget)


def test_the_checks_of_one_save_share_one_allowance() -> None:
    source = "{% for a in range(100) %}{% endfor %}ok"
    with checks_of_one_save():
        assert check_template(source) == source
        allowance = shared.get()
        assert allowance is not None
        allowance.deadline = cpu_time()  # the save's CPU time spent by the checks so far
        with pytest.raises(TemplateBudgetError, match=r"ms of CPU time"):
            check_template(source)
    assert shared.get() is None
    assert check_template(source) == source  # the next save has its own


def test_the_line_named_is_the_statement_that_went_over() -> None:
    source = "Hi {{ attendee_name }}\n{% for a in range(9000) %}{{ booking.notes }}{% endfor %}"
    with pytest.raises(TemplateBudgetError, match=f"^line 2: .*more than {MAX_OUTPUT}"):
        render(source, LONG_NOTES)


def test_the_cpu_time_is_checked_at_the_counters() -> None:
    budget = Budget()
    budget.deadline = cpu_time()  # no CPU time left
    with pytest.raises(TemplateBudgetError, match=r"ms of CPU time"):
        render("{% for a in range(100) %}{% endfor %}", sample_event(), budget=budget)


def test_placeholder_text_is_not_available() -> None:
    with pytest.raises(TemplateError, match="unknown field 'lipsum'"):
        check_template("{{ lipsum(100000) }}")


def test_lists_and_dicts_are_read_only() -> None:
    with pytest.raises(TemplateError, match=r"not allowed|unsafe"):
        render("{% set l = [1] %}{{ l.extend(l) }}", sample_event())


# --- any render: within the counters, or stopped --------------------------------------------------

FILTERS = [
    "center({n})",
    "indent({n})",
    "wordwrap({n})",
    "truncate({n})",
    "replace('n', 'nn', {n})",
    "batch({n})|list",
    "slice({n})|list",
    "list",
    "join('-')",
    "upper",
    "striptags",
    "urlize",
    "wordcount",
    "title",
    "string",
    "e",
    "tojson",
    "reverse|join",
    "trim('n')",
    "urlencode",
    "format({n})",
]
# str.format specs and % formats, widths from the template, the booking or nested fields
FORMATS = [
    "'{{:{n}}}'.format({v})",
    "'{{:\\n>{n}}}'.format({v})",
    "'{{:{{}}}}'.format({v}, '{n}')",
    "'{{:{{w}}.{{p}}}}'.format({v}, w={n}, p={n})",
    "'{{x:{{w}}}}'.format_map({{'x': {v}, 'w': {n}}})",
    "'{{:.{n}f}}'.format({n})",
    "'%{n}s' % {v}",
    "'%*s' % ({n}, {v})",
    "'%(x){n}s' % {{'x': {v}}}",
    "'%.{n}f' % {n}",
    "booking.start.strftime('%c' * {n})",
    "('{{:' ~ '%c' * {n} ~ '}}').format(booking.start)",
]
# single calls whose cost is in C: codecs, splits, strips, long words
CALLS = [
    "{v}.encode('{codec}')",
    "{v}.encode().decode('{codec}')",
    "{v}.split()",
    "{v}.splitlines()",
    "{v}.strip({v})",
    "{v}.replace('n', {v})",
    "{v}.center({n})",
    "{v}.translate({{110: 'xx'}})",
    "({v} * {n})|wordwrap(1)",
    "('(' * {n})|urlize",
]
CODECS = ["utf-8", "ascii", "latin-1", "idna", "punycode", "utf-16", "unicode_escape", "rot13"]
SOURCES = [
    "booking.notes",
    "range({n})",
    "'ab' * {n}",
    "[booking.notes] * {n}",
    "attendee_name",
    "'x' * {n}",
]
VALUES = ["booking.notes", "attendee_name", "'x'", "(booking.notes * 9)", "1"]


@st.composite
def templates(draw: st.DrawFn) -> str:
    """Nested loops over ranges and the booking's notes, filters, formats and C-level calls with
    numbers from small to absurd, and `~` growing a value across iterations."""
    number = st.one_of(st.integers(0, 50), st.integers(0, 10**5), st.integers(0, 10**9))

    def fill(pattern: str) -> str:
        return pattern.format(
            n=draw(number) or 1,
            v=draw(st.sampled_from(VALUES)),
            codec=draw(st.sampled_from(CODECS)),
        )

    def expression() -> str:
        kind = draw(st.sampled_from(["filters", "format", "call"]))
        if kind == "format":
            return fill(draw(st.sampled_from(FORMATS)))
        if kind == "call":
            return fill(draw(st.sampled_from(CALLS)))
        source = draw(st.sampled_from(SOURCES)).format(n=draw(number))
        chain = draw(st.lists(st.sampled_from(FILTERS), max_size=3))
        return "|".join([f"({source})", *(f.format(n=draw(number) or 1) for f in chain)])

    body = "{{ " + expression() + " }}"
    if draw(st.booleans()):
        body += "{% set ns.s = ns.s ~ ns.s %}{{ ns.s|length }}"
    for depth in range(draw(st.integers(0, 3))):
        iterable = draw(st.sampled_from(["range({n})", "booking.notes", "booking.notes|list"]))
        body = f"{{% for v{depth} in {iterable.format(n=draw(number))} %}}{body}{{% endfor %}}"
    return "{% set ns = namespace(s='ab') %}" + body


# What a booker may send: notes of up to 10,000 characters, long names, single long words.
NOTES = st.one_of(
    st.sampled_from(["", "Looking forward to it", "n " * 5000, "x" * 10000, "9" * 9, "%c" * 5000]),
    st.text(alphabet="ab(<>.%{}:\n\u0100 ", max_size=10000),
)
NAMES = st.sampled_from(["Grace Hopper", "G" * 200, "Ā" * 200])


def booker_event(notes: str, name: str) -> BookingEvent:
    booking = sample_event().booking.model_dump()
    invitee = {**booking["invitee"], "name": name}
    return sample_event(booking={**booking, "notes": notes, "invitee": invitee})


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(source=templates(), notes=NOTES, name=NAMES)
def test_any_render_stays_within_the_budget_or_is_stopped(
    source: str, notes: str, name: str
) -> None:
    event = booker_event(notes, name)
    # The clock is not asserted here (a shared machine makes any CPU figure flaky): the cost of a
    # stopped render is measured in bench/templates.py; this checks the counters that bound it.
    budget = Budget()
    try:
        out: str | None = render(source, event, budget=budget)
    except TemplateBudgetError as exc:
        assert "template budget exceeded" in str(exc)
        out = None
    except TemplateError:
        out = None  # e.g. wordwrap(0), a codec refused: an error of the template, not its cost
    if out is not None:
        assert len(out) <= MAX_OUTPUT
        assert budget.steps <= MAX_STEPS and budget.chars <= MAX_CHARS
    # Memory: the render's peak, traced on a second render (tracing slows what it traces).
    tracemalloc.start()
    try:
        with contextlib.suppress(TemplateBudgetError, TemplateError):
            render(source, event)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"peak {peak / 1e6:.1f} MB"


# --- at save, at send, in a dry run --------------------------------------------------------------


class Message(BaseModel):
    text: TemplateStr


def send(ctx: ActionContext) -> Result:
    """A third-party action written as the official ones are: its own template errors are
    ``template_error``; it knows nothing of the budget."""
    try:
        ctx.render(ctx.settings.text)
    except TemplateError as exc:
        return Result.fail(str(exc), error_code="template_error")
    return Result.ok()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    registry = registry_with(ActionType("acme.notify", "Notify", Message, send), load="slack")
    hub = Hub(fast_settings(data_dir=tmp_path), registry=registry)
    hub.migrate()
    yield hub
    hub.close()


@pytest.fixture
def account(hub: Hub) -> NewAccount:
    return create_account(hub, "Acme", "business")


@pytest.fixture
def client(hub: Hub, account: NewAccount) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(hub)) as client:
        client.headers["Authorization"] = f"Bearer {account.api_key}"
        yield client


SLACK = {"webhook_url": "https://hooks.slack.com/services/T0/B0/secret"}


@pytest.mark.parametrize(
    "source", [NESTED_RANGES, "Hi\n" + CENTER, "Hi\n" + IN_RANGE], ids=["ranges", "center", "in"]
)
def test_saving_answers_422_naming_the_field_and_line(client: TestClient[Any], source: str) -> None:
    body = {
        "name": "hostile",
        "trigger": "booking.created",
        "steps": [{"action": "slack.post", "settings": {**SLACK, "text": source}}],
    }
    answer = client.post("/v1/workflows", json=body)
    assert answer.status_code == 422
    [problem] = answer.json()["fields"]
    assert problem["field"] == "steps.0.settings.text"
    line = source.count("\n") + 1
    assert f"line {line}: template budget exceeded" in problem["message"]
    assert client.get("/v1/workflows").json() == []


class Watched(BaseModel):
    """Settings whose check records the time allowance it ran under."""

    text: TemplateStr

    @field_validator("text")
    @classmethod
    def _seen(cls, value: str) -> str:
        ALLOWANCES.append(shared.get())
        return value


ALLOWANCES: list[Allowance | None] = []


def test_saving_a_workflow_checks_all_its_templates_within_one_allowance(tmp_path: Path) -> None:
    # Five steps' templates, each checked against three sample bookings, share one allowance
    # (SAVE_CPU_SECONDS), so a save's cost is bounded however many templates it holds.
    action = ActionType("acme.watched", "Watched", Watched, send)
    hub = Hub(fast_settings(data_dir=tmp_path), registry=registry_with(action, load="slack"))
    hub.migrate()
    account = create_account(hub, "Acme", "business")
    ALLOWANCES.clear()
    with TestClient(create_app(hub)) as client:
        client.headers["Authorization"] = f"Bearer {account.api_key}"
        step = {"action": "acme.watched", "settings": {"text": "Hi {{ attendee_name }}"}}
        body = {"name": "five", "trigger": "booking.created", "steps": [step] * 5}
        assert client.post("/v1/workflows", json=body).status_code == 201
        assert client.post("/v1/workflows", json={**body, "name": "again"}).status_code == 201
    hub.close()
    first, second = ALLOWANCES[:5], ALLOWANCES[5:]
    assert len(second) == 5 and all(isinstance(a, Allowance) for a in ALLOWANCES)
    assert all(a is first[0] for a in first) and all(a is second[0] for a in second)
    assert first[0] is not second[0]  # each save has its own


def test_a_send_stopped_by_the_budget_fails_permanently(
    hub: Hub, account: NewAccount, client: TestClient[Any]
) -> None:
    # The official Slack plugin (async) and a third-party action (sync), each catching only
    # TemplateError: the engine decides the outcome for both.
    steps = [
        {"action": "slack.post", "settings": {**SLACK, "text": NOTES_SQUARED}},
        {"action": "acme.notify", "settings": {"text": NOTES_SQUARED}},
    ]
    for step in steps:
        body = {"name": step["action"], "trigger": "booking.created", "enabled": True}
        assert client.post("/v1/workflows", json={**body, "steps": [step]}).status_code == 201
    run_ids = hub.emit(LONG_NOTES, account_id=account.id).run_ids
    assert len(run_ids) == 2
    for run_id in run_ids:
        hub.process_run(run_id)
        run = client.get(f"/v1/runs/{run_id}").json()
        assert run["status"] == "failed"
        [step] = run["steps"]
        assert (step["status"], step["error_code"]) == ("failed", "template_budget")
        assert [(a["status"], a["error_code"]) for a in step["attempt_log"]] == [
            ("failed", "template_budget")
        ]
        assert step["error"].startswith("line 1: template budget exceeded: more than")


def test_a_send_comparing_a_bookers_list_fails_before_reaching_the_network(
    hub: Hub, account: NewAccount, client: TestClient[Any]
) -> None:
    step = {"action": "slack.post", "settings": {**SLACK, "text": BOOKER_LIST}}
    body = {"name": "list", "trigger": "payment.received", "enabled": True, "steps": [step]}
    assert client.post("/v1/workflows", json=body).status_code == 201
    [run_id] = hub.emit(with_booking(foo=[1e300] * 30000), account_id=account.id).run_ids
    hub.process_run(run_id)
    [sent] = client.get(f"/v1/runs/{run_id}").json()["steps"]
    # Stopped by the budget: an attempt at the (unreachable) Slack URL would be a network error.
    assert (sent["status"], sent["error_code"]) == ("failed", "template_budget")
    assert [a["error_code"] for a in sent["attempt_log"]] == ["template_budget"]


def test_a_dry_run_reports_the_budget_as_a_step_problem(client: TestClient[Any]) -> None:
    body = {
        "name": "notes",
        "trigger": "booking.created",
        "steps": [{"action": "acme.notify", "settings": {"text": NOTES_SQUARED}}],
    }
    created = client.post("/v1/workflows", json=body).json()
    test = f"/v1/workflows/{created['id']}/test"
    fine = client.post(test, json={"mode": "dry_run"}).json()
    assert fine["steps"][0]["error"] is None and fine["steps"][0]["output"]["text"] == "x" * 441
    event = LONG_NOTES.model_dump(mode="json")
    [step] = client.post(test, json={"mode": "dry_run", "event": event}).json()["steps"]
    assert step["error_code"] == "template_budget"
    assert step["error"].startswith("line 1: template budget exceeded: ")


def test_a_garbage_collection_during_a_render_is_not_charged_to_it() -> None:
    """A worker process holds many objects; a full collection that happens to fall in a render
    can take longer than the whole CPU budget, and must not fail a legitimate message."""
    held = [[i] for i in range(400_000)]
    budget = Budget()
    budget.deadline = cpu_time() + 0.002  # less than the collection takes
    started, charged_from = time.thread_time(), cpu_time()
    gc.collect()
    spent, charged = time.thread_time() - started, cpu_time() - charged_from
    assert spent > 0.005  # the collection did real work in this thread
    assert charged < spent / 10
    budget.clock()  # what a render's next step would do: not stopped
    assert len(held) == 400_000
