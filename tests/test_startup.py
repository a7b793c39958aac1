"""What a process does to shared state when it starts: the generated secret key (one key, 0600,
whoever starts first) and the runs an embedded `serve` takes back (only from a database it owns)."""

from __future__ import annotations

import stat
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from linktime import plugins, workflows
from linktime.accounts import create_account
from linktime.engine import Hub, utcnow
from linktime.models import sample_event
from linktime.settings import Settings
from linktime.storage import Run
from linktime.testing import HttpReceiver
from pydantic import BaseModel, SecretStr
from sqlalchemy import select, update

from .conftest import LOOPBACK, REDIS
from .procs import clean_env, serve_with_account, stop
from .test_delivery import SECRET

HUBS = 8


class Sealed(BaseModel):
    token: SecretStr


def _hubs_starting_together(data_dir: Path) -> list[Hub]:
    """HUBS hubs created at once on a fresh data dir, none with a configured secret key."""
    registry = plugins.load("")
    barrier = threading.Barrier(HUBS)
    hubs: list[Hub] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            hubs.append(Hub(Settings(data_dir=data_dir, secret_key=None), registry=registry))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(HUBS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return hubs


@pytest.mark.parametrize("round_", range(10))
def test_hubs_starting_together_share_one_private_secret_key(tmp_path: Path, round_: int) -> None:
    hubs = _hubs_starting_together(tmp_path)
    key = tmp_path / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no draft left behind
    # What any one of them sealed, every other one opens.
    sealed = hubs[0].sealer.seal(Sealed, Sealed(token=SecretStr("tok")))
    for hub in hubs:
        opened = hub.sealer.open(Sealed, sealed)
        assert isinstance(opened, Sealed) and opened.token.get_secret_value() == "tok"
        hub.close()
    # A later start reads the same key rather than writing a new one.
    again = Hub(Settings(data_dir=tmp_path, secret_key=None), registry=plugins.load(""))
    reopened = again.sealer.open(Sealed, sealed)
    assert isinstance(reopened, Sealed) and reopened.token.get_secret_value() == "tok"
    again.close()


def test_only_a_database_this_process_owns_is_resumed(tmp_path: Path, pg_url: str) -> None:
    registry = plugins.load("")

    def owns(**settings: object) -> bool:
        hub = Hub(Settings(data_dir=tmp_path, secret_key="k", **settings), registry=registry)
        hub.close()
        return hub.owns_database

    assert owns()  # the embedded default's SQLite
    assert not owns(database_url=pg_url)
    assert owns(database_url=pg_url, owns_database=True)
    assert not owns(database_url=pg_url, owns_database=True, redis_url=REDIS)


def _a_run_another_worker_holds(
    tmp_path: Path, pg_url: str, url: str
) -> tuple[str, tuple[Any, ...]]:
    hub = Hub(Settings(data_dir=tmp_path / "setup", database_url=pg_url, secret_key="k"))
    hub.migrate()
    account = create_account(hub, "shared", "business")
    workflows.create(
        hub,
        account.id,
        workflows.WorkflowIn(
            name="hook",
            trigger="booking.created",
            enabled=True,
            steps=[{"action": "webhook.call", "settings": {"url": url, "secret": SECRET}}],
        ),
    )
    [run_id] = hub.emit(sample_event(id="evt_held"), account_id=account.id).run_ids
    held_until = utcnow() + timedelta(hours=1)
    with hub.db.begin() as conn:
        conn.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status="running", lease_token="lease_other", lease_until=held_until)
            .values(due_at=held_until)
        )
    held = _lease(hub, run_id)
    hub.close()
    return run_id, held


def _lease(hub: Hub, run_id: str) -> tuple[Any, ...]:
    """What says who holds a run: its status, lease token, lease end and due time."""
    with hub.db.connect() as conn:
        columns = (Run.status, Run.lease_token, Run.lease_until, Run.due_at)
        return tuple(conn.execute(select(*columns).where(Run.id == run_id)).one())


def test_serve_on_a_shared_postgresql_leaves_live_leases_alone(
    tmp_path: Path, pg_url: str, http_receiver: HttpReceiver
) -> None:
    run_id, held = _a_run_another_worker_holds(tmp_path, pg_url, http_receiver.url)
    env = clean_env(
        LINKTIME_DATABASE_URL=pg_url,
        LINKTIME_SECRET_KEY="k",
        LINKTIME_HTTP_ALLOWED_NETWORKS=LOOPBACK,
        LINKTIME_LOAD_PLUGINS="webhook",
    )
    shared = serve_with_account(env, tmp_path)
    try:
        # Up and answering: the start-up, where orphans would be resumed, is over.
        hub = Hub(Settings(data_dir=tmp_path / "check", database_url=pg_url, secret_key="k"))
        assert _lease(hub, run_id) == held
        assert held[:2] == ("running", "lease_other")
        hub.close()
    finally:
        stop([shared.proc])
    assert http_receiver.requests == []

    # The operator says this serve is the database's only worker: the run resumes at start.
    owner = serve_with_account({**env, "LINKTIME_OWNS_DATABASE": "true"}, tmp_path)
    try:
        http_receiver.wait_for(1, timeout=30)
    finally:
        stop([owner.proc])
