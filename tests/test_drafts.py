"""The editor's drafts in the core: a new workflow's draft creates one workflow at most, even
when two saves of it run at once (the claim is in the creating transaction, in PostgreSQL);
a draft is its account's only; a day-old draft is deleted when another is written."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from linktime import drafts, workflows
from linktime.errors import NotFound

from .conftest import System

SPEC = workflows.WorkflowIn(
    name="Once",
    trigger="booking.created",
    steps=[{"action": "webhook.call", "settings": {"url": "https://example.com/hook"}}],
)


def test_two_saves_of_one_draft_at_once_create_one_workflow(
    make_system: Callable[..., System],
) -> None:
    system = make_system()
    account = system.account()
    token = drafts.write(system.hub, account.id, drafts.new_token(), None, {}, {})
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def save() -> None:
        start.wait()
        try:
            created, _ = workflows.create(system.hub, account.id, SPEC, draft=token)
            outcomes.append(created.id)
        except drafts.AlreadyCreated:
            outcomes.append("refused")

    threads = [threading.Thread(target=save) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [stored] = [w.id for w in workflows.list_all(system.hub, account.id)]
    assert sorted(outcomes) == sorted([stored, "refused"])
    assert drafts.created(system.hub, token) == stored


def test_a_draft_is_its_accounts_only_and_kept_a_day(
    make_system: Callable[..., System],
) -> None:
    system = make_system()
    a, b = system.account(), system.account()
    token = drafts.write(system.hub, a.id, drafts.new_token(), None, {"name": "A's"}, {})
    assert drafts.get(system.hub, a.id, token).form == {"name": "A's"}
    with pytest.raises(NotFound):
        drafts.get(system.hub, b.id, token)
    # B posting A's token gets a draft of its own; A's is untouched.
    theirs = drafts.write(system.hub, b.id, token, None, {"name": "B's"}, {})
    assert theirs != token
    assert drafts.get(system.hub, a.id, token).form == {"name": "A's"}
    # A day later, writing any draft deletes the old ones.
    later = system.hub.clock() + drafts.KEPT + timedelta(minutes=1)
    system.hub.clock = lambda: later
    drafts.write(system.hub, b.id, drafts.new_token(), None, {}, {})
    with pytest.raises(NotFound):
        drafts.get(system.hub, a.id, token)
