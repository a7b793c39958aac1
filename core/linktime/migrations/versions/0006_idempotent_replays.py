"""idempotent replays: what a run replays, the Idempotency-Key it was asked with

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 08:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# As in storage.PENDING_REPLAY when this revision was written.
PENDING_REPLAY = "replay_of IS NOT NULL AND status IN ('queued', 'running', 'scheduled', 'waiting')"


def upgrade() -> None:
    # Not in batch mode: on SQLite that copies the table and drops the old one, and the drop
    # cascades to every run's steps and attempts (foreign keys are on). Replays made before
    # this revision stay unlinked: their runs say so only in their note.
    op.add_column("runs", sa.Column("replay_of", sa.String(length=40), nullable=True))
    op.add_column("runs", sa.Column("replay_key", sa.String(length=200), nullable=True))
    op.create_index(
        "ux_runs_pending_replay",
        "runs",
        ["replay_of"],
        unique=True,
        postgresql_where=sa.text(PENDING_REPLAY),
        sqlite_where=sa.text(PENDING_REPLAY),
    )
    op.create_index(
        "ux_runs_replay_key",
        "runs",
        ["account_id", "replay_key"],
        unique=True,
        postgresql_where=sa.text("replay_key IS NOT NULL"),
        sqlite_where=sa.text("replay_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ux_runs_replay_key", table_name="runs")
    op.drop_index("ux_runs_pending_replay", table_name="runs")
    op.drop_column("runs", "replay_key")  # SQLite >= 3.35 drops a column in place
    op.drop_column("runs", "replay_of")
