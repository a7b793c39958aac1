"""Message templates: the documented fields, timezones, and the sandbox."""

from __future__ import annotations

import pytest
from linktime.models import sample_event
from linktime.templating import TemplateError, check_template, render


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
        ("{% if %}", "line 1: syntax error"),
        ("{{ booking.__class__.__mro__ }}", "not allowed"),
        ("{{ ().__class__.__base__.__subclasses__() }}", "not allowed"),
        ("{{ booking.start.__globals__ }}", "unknown field '__globals__'"),
        ("{{ range(10**9) | list }}", "Range too big"),
        ("{{ 'x' * 1000000000 }}", "repetition too large"),
    ],
)
def test_bad_templates_are_refused_naming_the_problem(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as raised:
        check_template(source)
    assert message in str(raised.value)
