"""Pytest fixtures for plugin authors (registered through the ``pytest11`` entry point).

- ``booking_event``: a realistic ``BookingEvent``.
- ``run_action``: run one installed action against an event, as the engine would, and get its
  ``Result``.
- ``linktime_hub``: a ``Hub`` on a fresh SQLite database with the in-process broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .actions import Result
    from .engine import Hub
    from .models import BookingEvent


@pytest.fixture
def booking_event() -> BookingEvent:
    from .models import sample_event

    return sample_event()


RunAction = Callable[..., "Result"]


def run_action(
    action: str,
    settings: dict[str, Any],
    event: BookingEvent | None = None,
    *,
    attempt: int = 1,
    trigger: str | None = None,
    credentials: dict[str, Any] | None = None,
    step_id: str = "stp_test",
) -> Result:
    """Validate ``settings`` with the action's model and run one attempt against ``event``."""
    from . import plugins
    from .actions import ActionContext, WorkflowRef
    from .engine import call_execute
    from .models import sample_event

    action_type = plugins.load().action(action)
    event = event or sample_event()
    creds = None
    if action_type.credentials is not None and credentials is not None:
        creds = action_type.credentials.model_validate(credentials)
    ctx = ActionContext(
        event=event,
        trigger=trigger or event.type,
        workflow=WorkflowRef("wf_test", "Test workflow"),
        account_id="acc_test",
        plan="business",
        run_id="run_test",
        step_id=step_id,
        position=0,
        attempt=attempt,
        settings=action_type.settings.model_validate(settings),
        credentials=creds,
    )
    return call_execute(action_type.execute, ctx)


@pytest.fixture(name="run_action")
def run_action_fixture() -> RunAction:
    return run_action


@pytest.fixture
def linktime_hub(tmp_path: Path) -> Iterator[Hub]:
    from .engine import Hub
    from .settings import Settings

    hub = Hub(Settings(data_dir=tmp_path, secret_key="test-secret"))
    hub.migrate()
    try:
        yield hub
    finally:
        hub.close()
