"""Message templates: the documented fields, timezones, and the sandbox."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from linktime import plugins
from linktime.models import BookingEvent, sample_event
from linktime.templating import (
    TemplateError,
    check_template,
    is_template,
    localtime,
    render,
    variables,
)
from linktime.testruns import sample_for

ROOT = Path(__file__).resolve().parent.parent


def test_fields_render_in_the_attendees_timezone() -> None:
    event = sample_event()  # starts 2026-12-01 15:00 UTC; invitee in New York, host in Berlin
    text = render(
        "Hi {{ attendee_first_name }}, {{ event_name }} on {{ event_date }} at {{ event_time }}"
        "-{{ event_end_time }} ({{ timezone }}) with {{ organizer_name }}. "
        "{{ booking.start | localtime(host.timezone, '%H:%M %Z') }}",
        event,
    )
    assert text == (
        "Hi Grace, Intro call between Ada Lovelace and Grace Hopper on Tuesday, December 1, 2026"
        " at 10:00 AM-10:30 AM (America/New_York) with Ada Lovelace. 16:00 CET"
    )
    assert (
        render("{{ booking.start | localtime }}", event) == "Tuesday, December 1, 2026 10:00 AM EST"
    )
    assert render("{{ payment_amount }} {{ payment.reference }}", event) == "50.00 USD pi_sample"


def test_missing_optional_fields_render_empty() -> None:
    event = sample_event(booking={**sample_event().booking.model_dump(), "notes": None})
    assert render("[{{ additional_notes }}]", event) == "[]"


def test_html_templates_escape_booking_text() -> None:
    event = sample_event()
    event.booking.notes = "<script>alert(1)</script>"
    assert "&lt;script&gt;" in render("<p>{{ additional_notes }}</p>", event, html=True)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Hello {{ invitee.nmae }}", "line 1: unknown field 'nmae'"),
        ("Hello\n\n{{ attendee_nickname }}", "line 3: unknown field 'attendee_nickname'"),
        ("{{ attendee_nme }}", "unknown field 'attendee_nme': did you mean 'attendee_name'?"),
        ("{{ invitee.frist_name }}", "unknown field 'frist_name': did you mean 'first_name'?"),
        ("{% if %}", "line 1: syntax error"),
        ("{{ booking.__class__.__mro__ }}", "not allowed"),
        ("{{ ().__class__.__base__.__subclasses__() }}", "not allowed"),
        ("{{ booking.start.__globals__ }}", "unknown field '__globals__'"),
    ],
)
def test_bad_templates_are_refused_naming_the_problem(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as raised:
        check_template(source)
    assert message in str(raised.value)


# --- the budget changes nothing for ordinary templates --------------------------------------------


def unbudgeted(source: str, event: BookingEvent, html: bool = False) -> str:
    """The render before the budget: Jinja2's plain sandbox with the same settings."""
    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=html, finalize=lambda v: "" if v is None else v
    )
    env.filters["localtime"] = localtime
    return env.from_string(source).render(variables(event))


def builtin_templates() -> list[Any]:
    """Every template field of every step of the plugins' ready-made workflows."""
    registry = plugins.load()
    found = []
    for template in registry.templates.values():
        for step in template.steps:
            fields = registry.action(step.action).settings.model_fields
            for name, value in step.settings.items():
                if name in fields and is_template(fields[name]) and isinstance(value, str):
                    event = sample_for(template.trigger)
                    found.append(pytest.param(value, event, name == "html", id=template.name))
    return found


_EXAMPLE = re.compile(r'"(?:subject|text|html|script)": ("(?:[^"\\]|\\.)*")')


def readme_examples() -> list[Any]:
    """The templates in the READMEs' workflow examples, and the localtime examples."""
    found = [
        "{{ booking.start | localtime }}",
        "{{ booking.start | localtime(host.timezone) }}",
        '{{ booking.start | localtime("Europe/Paris", "%H:%M") }}',
    ]
    for readme in [ROOT / "README.md", *sorted(ROOT.glob("plugins/*/README.md"))]:
        found += [json.loads(m) for m in _EXAMPLE.findall(readme.read_text())]
    return [s for s in dict.fromkeys(found) if "{{" in s]


def test_the_examples_are_found() -> None:
    assert len(builtin_templates()) >= 6 and len(readme_examples()) >= 10


@pytest.mark.parametrize(("source", "event", "html"), builtin_templates())
def test_builtin_templates_render_as_before(source: str, event: BookingEvent, html: bool) -> None:
    assert render(source, event, html=html) == unbudgeted(source, event, html)


@pytest.mark.parametrize("source", readme_examples())
@pytest.mark.parametrize("html", [False, True], ids=["text", "html"])
def test_readme_examples_render_as_before(source: str, html: bool) -> None:
    for event in (sample_event(), sample_event("payment.received")):
        assert render(source, event, html=html) == unbudgeted(source, event, html)


@pytest.mark.parametrize(
    "source",
    [
        "{% for g in booking.guests %}{{ loop.index }}. {{ g }}{% endfor %}",
        "{{ booking.notes|wordwrap(20)|indent(2) }} {{ booking.notes|truncate(10) }}",
        "{{ '%s: %.2f'|format(event_name, 3.14159) }} {{ '%05d' % 42 }} {{ '{:>8}'.format('x') }}",
        "{{ event_name|center(60) }}|{{ [1, 2, 3]|join(', ') }}|{{ [[1], [2]]|sum(start=[]) }}",
        "{% set ns = namespace(s='') %}{% for w in event_name.split() %}"
        "{% set ns.s = ns.s ~ w[0] %}{% endfor %}{{ ns.s }} {{ invitee|tojson }} {{ 2 ** 10 }}"
        "{{ 'ab' * 3 }} {{ booking.guests|length }}",
        "{% macro line(k, v) %}{{ k }}={{ v }}{% endmacro %}{{ line('a', 1) }}"
        "{% set block %}{{ line('b', 2) }}{% endset %}{{ block|upper }}",
        "{{ booking.notes.replace('forward', 'back') }} {{ range(3)|list }} {{ invitee|dictsort }}",
    ],
)
def test_filters_loops_and_macros_render_as_before(source: str) -> None:
    event = sample_event()
    assert render(source, event) == unbudgeted(source, event)


def test_tojson_writes_the_event_as_its_json() -> None:
    event = sample_event("payment.received")
    received = event.model_dump(mode="json")
    assert json.loads(render("{{ booking|tojson }}", event)) == received["booking"]
    assert json.loads(render("{{ event|tojson }}", event)) == {
        k: received[k] for k in ("id", "type", "occurred_at")
    }
    assert render("{{ booking.start|tojson }}", event) == '"2026-12-01T15:00:00Z"'
    assert check_template("{{ booking|tojson }}") == "{{ booking|tojson }}"


def test_the_booking_forms_answers_render_and_a_missing_one_is_empty() -> None:
    template = check_template("Company: {{ custom.company }}.")  # valid for every booking
    answered = sample_event()
    answered.booking.custom_fields = {"company": "Acme Inc"}
    assert render(template, answered) == "Company: Acme Inc."
    assert render(template, sample_event()) == "Company: ."
