"""Finding an event by an invitee's email, on the embedded database (SQLite) and on PostgreSQL:
any of the booking's invitees, in any case, non-ASCII letters included (SQLite's lower() folds
ASCII only, so the emails are stored casefolded by Python). Events stored before the emails were
indexed are found too: the migration fills the index from them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from linktime import activity
from linktime.accounts import create_account
from linktime.engine import Hub
from linktime.migrations import upgrade
from linktime.models import sample_event
from linktime.storage import Account, Event, new_id
from sqlalchemy import insert

from .conftest import fast_settings

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    """A hub on an empty database, not migrated yet."""
    url = (
        f"sqlite:///{tmp_path / 'hub.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    made = Hub(fast_settings(data_dir=tmp_path, database_url=url), registry=None)
    yield made
    made.close()


def booking(uid: str) -> dict[str, Any]:
    """A booking with three people invited: Jörg (the invitee) and two more."""
    data: dict[str, Any] = sample_event().model_dump(mode="json")["booking"]
    data["uid"] = uid
    data["invitee"].update(name="Jörg Åström", email="JÖRG@Example.com")
    data["invitees"] = [
        {"name": "Jörg Åström", "email": "JÖRG@Example.com"},  # the invitee, listed again
        {"name": "Bo Li", "email": "Bo.Li@Example.com"},
        {"name": "Kim Park"},  # no email
    ]
    return data


def found(hub: Hub, account_id: str, q: str) -> list[str]:
    return [e.id for e in activity.list_events(hub, account_id, q).items]


def every_page(hub: Hub, account_id: str, q: str) -> list[str]:
    """The ids of every event found, page after page."""
    ids: list[str] = []
    cursor = None
    while True:
        page = activity.list_events(hub, account_id, q, activity.MAX_LIMIT, cursor)
        ids += [e.id for e in page.items]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def test_an_event_is_found_by_any_invitees_email_in_any_case(hub: Hub) -> None:
    hub.migrate()
    account = create_account(hub, "a", "business").id
    other = create_account(hub, "b", "business").id
    for n in range(2):
        event = sample_event(id=f"evt_{n}", booking=booking(f"bk_{n}"))
        hub.emit(event, account_id=account)
    hub.emit(sample_event(id="evt_plain"), account_id=account)

    # Typed as sent, as a person would type it, and another invitee's.
    for q in ("JÖRG@Example.com", "jörg@example.com", "bo.li@EXAMPLE.com"):
        assert found(hub, account, q) == ["evt_1", "evt_0"], q
    assert found(hub, account, "grace@example.com") == ["evt_plain"]
    assert found(hub, account, "Kim Park") == []
    assert found(hub, other, "jörg@example.com") == []

    row = activity.list_events(hub, account, "evt_0").items[0]
    # Everyone invited, the invitee first and once.
    assert [(p.name, p.email) for p in row.invitees] == [
        ("Jörg Åström", "JÖRG@Example.com"),
        ("Bo Li", "Bo.Li@Example.com"),
        ("Kim Park", None),
    ]


def test_the_migration_indexes_the_emails_of_events_already_stored(hub: Hub) -> None:
    upgrade(hub.db, "0007")
    # More than one of the migration's batches; ids in order, as time-ordered ids are.
    ids = sorted(new_id("ev") for _ in range(1001))
    rows = [
        {
            "id": pk,
            "account_id": "acc",
            "event_id": f"evt_{n:04}",
            "type": "booking.created",
            "booking_uid": f"bk_{n:04}",
            "occurred_at": NOW,
            "received_at": NOW,
            "payload": {"booking": booking(f"bk_{n:04}")},
            "payload_hash": "digest",
            "answer": {},
            "decisions": [],
        }
        for n, pk in enumerate(ids)
    ]
    # A test run's event: never listed, so never indexed.
    test_run = {**rows[0], "id": new_id("ev"), "event_id": "test_1", "payload_hash": "-"}
    with hub.db.begin() as conn:
        conn.execute(insert(Account), {"id": "acc", "name": "a", "plan": "free", "created_at": NOW})
        conn.execute(insert(Event), [*rows, test_run])

    upgrade(hub.db)

    for q in ("jörg@example.com", "BO.LI@example.com"):
        assert every_page(hub, "acc", q) == [r["event_id"] for r in reversed(rows)]
