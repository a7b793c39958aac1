"""The hub of ``linktime_server`` on a fixed clock: the fixtures' webhooks were made a few
minutes before ``now``, their meetings are days after it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from linktime.testing_hub import LinktimeHub


@pytest.fixture
def now() -> datetime:
    return datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def linktime_hub(linktime_hub: LinktimeHub, now: datetime) -> LinktimeHub:
    linktime_hub.clock = lambda: now
    return linktime_hub
