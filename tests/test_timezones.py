"""Property tests over timezones and DST transitions: due times are exact instants, and dates
render in the attendee's own wall-clock time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import given, settings
from hypothesis import strategies as st
from linktime.bookings import decide
from linktime.builtins import TRIGGERS
from linktime.models import sample_event
from linktime.templating import render

BEFORE, AFTER = (
    next(t for t in TRIGGERS if t.name == n) for n in ("meeting.before", "meeting.after")
)
ZONES = sorted(
    z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))
)
# Instants clustered around 2026's DST changes in Europe and North America, and elsewhere.
TRANSITIONS = [
    datetime(2026, 3, 8, 7, tzinfo=UTC),
    datetime(2026, 3, 29, 1, tzinfo=UTC),
    datetime(2026, 10, 25, 1, tzinfo=UTC),
    datetime(2026, 11, 1, 6, tzinfo=UTC),
    datetime(2026, 4, 5, 16, tzinfo=UTC),
]
instants = st.builds(
    lambda base, minutes: base + timedelta(minutes=minutes),
    st.sampled_from(TRANSITIONS),
    st.integers(min_value=-36 * 60, max_value=36 * 60),
)


@settings(max_examples=300, deadline=None)
@given(
    start=instants,
    zone=st.sampled_from(ZONES),
    offset=st.integers(min_value=0, max_value=3 * 24 * 60),
    lead=st.integers(min_value=1, max_value=5 * 24 * 60),
)
def test_due_time_is_the_same_instant_whatever_the_zone(
    start: datetime, zone: str, offset: int, lead: int
) -> None:
    local_start = start.astimezone(ZoneInfo(zone))  # as a client in that zone would send it
    end = (start + timedelta(minutes=30)).astimezone(ZoneInfo(zone))
    now = start - timedelta(minutes=lead)
    due, note = decide(BEFORE, offset, local_start, end, now)
    expected = start - timedelta(minutes=offset)
    if expected > now:
        assert due == expected and note is None
    else:
        assert due == now and "sent at once" in (note or "")
    after_due, _ = decide(AFTER, offset, local_start, end, now)
    assert after_due == start + timedelta(minutes=30 + offset)
    # exact elapsed time across a DST change: no hour gained or lost
    assert (start - expected).total_seconds() == offset * 60


@settings(max_examples=300, deadline=None)
@given(start=instants, zone=st.sampled_from(ZONES))
def test_dates_render_in_the_attendees_wall_clock(start: datetime, zone: str) -> None:
    base = sample_event()
    booking = base.booking.model_dump(mode="json")
    booking.update(start=start, end=start + timedelta(minutes=45))
    booking["invitee"] = {**booking["invitee"], "timezone": zone}
    event = sample_event(booking=booking)
    local = start.astimezone(ZoneInfo(zone))
    text = render(
        "{{ event_date }}|{{ event_time }}|{{ booking.start | localtime(invitee.timezone, "
        "'%Y-%m-%d %H:%M %z') }}|{{ booking.start | localtime }}",
        event,
    )
    date, time_, iso, default = text.split("|")
    assert date == local.strftime("%A, %B %-d, %Y")
    assert time_ == local.strftime("%-I:%M %p")
    assert iso == local.strftime("%Y-%m-%d %H:%M %z")
    assert default.endswith(local.strftime("%Z"))
    # round trip: the rendered wall time and offset name the same instant
    assert datetime.strptime(iso, "%Y-%m-%d %H:%M %z") == start.replace(second=0, microsecond=0)
