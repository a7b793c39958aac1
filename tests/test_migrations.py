"""Upgrading an embedded (SQLite) database keeps what it holds. On SQLite, Alembic's batch mode
copies a table and drops the old one; with foreign keys enforced, that drop would cascade and
delete every row that refers to it (a run's steps and attempts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from linktime.migrations import upgrade
from linktime.storage import make_engine
from sqlalchemy import text


@pytest.mark.parametrize("since", ["0001", "0002", "0003", "0004", "0005"])
def test_upgrading_an_embedded_database_keeps_its_runs_steps_and_attempts(
    tmp_path: Path, since: str
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, since)
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO accounts VALUES ('acc', 'a', 'free', '2026-11-01 10:00:00')")
            )
            conn.execute(
                text(
                    "INSERT INTO events (id, account_id, event_id, type, booking_uid, occurred_at,"
                    " received_at, payload, payload_hash) VALUES ('ev', 'acc', 'evt_1',"
                    " 'booking.created', 'bk_1', '2026-11-01 10:00:00', '2026-11-01 10:00:00',"
                    " '{}', '-')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO runs (id, account_id, workflow_id, workflow_name, event_id,"
                    " trigger, status, created_at) VALUES ('run_1', 'acc', 'wf_1', 'w', 'ev',"
                    " 'booking.created', 'succeeded', '2026-11-01 10:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO run_steps (id, run_id, position, action, settings, status,"
                    " attempts) VALUES ('stp_1', 'run_1', 0, 'webhook.call', '{}', 'succeeded', 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO attempts (id, step_id, number, status, started_at, duration_ms)"
                    " VALUES ('att_1', 'stp_1', 1, 'succeeded', '2026-11-01 10:00:00', 12)"
                )
            )
        upgrade(engine)
        with engine.connect() as conn:
            counts = [
                conn.scalar(text(f"SELECT count(*) FROM {table}"))
                for table in ("runs", "run_steps", "attempts", "events")
            ]
            enforced = conn.scalar(text("PRAGMA foreign_keys"))
        assert counts == [1, 1, 1, 1]
        assert enforced == 1  # the pooled connection enforces foreign keys again
    finally:
        engine.dispose()


def test_head_is_the_newest_revision_alembic_knows(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory
    from linktime.migrations import HEAD, config

    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    assert ScriptDirectory.from_config(config(engine)).get_current_head() == HEAD


def test_a_database_at_head_is_not_handed_to_alembic(tmp_path: Path) -> None:
    # What `linktime serve` does at start, in a fresh interpreter each time.
    script = (
        "import sys; from linktime.engine import Hub; from linktime.settings import Settings; "
        f"hub = Hub(Settings(data_dir={str(tmp_path)!r}, load_plugins='')); hub.migrate(); "
        "print('alembic' in sys.modules)"
    )

    def start() -> str:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert start() == "True"  # a new database: migrated
    assert start() == "False"  # at head: left alone, Alembic never imported
    engine = make_engine(f"sqlite:///{tmp_path / 'linktime.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM workflows")).scalar_one() == 0
