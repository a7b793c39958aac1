"""Upgrading an embedded (SQLite) database keeps what it holds. On SQLite, Alembic's batch mode
copies a table and drops the old one; with foreign keys enforced, that drop would cascade and
delete every row that refers to it (a run's steps and attempts)."""

from __future__ import annotations

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
