"""one pending reminder per workflow and booking

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 08:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.sql.selectable import NamedFromClause

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# As in storage.PENDING_REMINDER when this revision was written.
PENDING_REMINDER = "unfired AND status IN ('scheduled', 'queued')"

runs = sa.table(
    "runs",
    sa.column("id", sa.String),
    sa.column("workflow_id", sa.String),
    sa.column("booking_uid", sa.String),
    sa.column("status", sa.String),
    sa.column("unfired", sa.Boolean),
    sa.column("note", sa.Text),
    sa.column("due_at", sa.DateTime),
    sa.column("finished_at", sa.DateTime),
)
run_steps = sa.table("run_steps", sa.column("run_id", sa.String))


def _pending(t: NamedFromClause) -> sa.ColumnElement[bool]:
    return sa.and_(t.c.unfired == sa.true(), t.c.status.in_(("scheduled", "queued")))


def upgrade() -> None:
    # Not in batch mode: on SQLite that copies the table and drops the old one, and the drop
    # cascades to every run's steps and attempts (foreign keys are on).
    op.add_column(
        "runs", sa.Column("unfired", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    # A reminder no worker has taken yet: waiting for its time or queued, with no steps (they
    # are copied when it is taken; an event's run always has at least one).
    op.execute(
        runs.update()
        .where(
            runs.c.status.in_(("scheduled", "queued")),
            ~sa.exists().where(run_steps.c.run_id == runs.c.id),
        )
        .values(unfired=True)
    )
    # The races this revision closes may have left two pending reminders for one booking (the
    # old time's and the new one's): the newest stands, the others are cancelled.
    newer = runs.alias("newer")
    op.execute(
        runs.update()
        .where(
            _pending(runs),
            sa.exists().where(
                newer.c.workflow_id == runs.c.workflow_id,
                newer.c.booking_uid == runs.c.booking_uid,
                _pending(newer),
                newer.c.id > runs.c.id,
            ),
        )
        .values(
            status="cancelled",
            note="a duplicate of a later reminder for this booking",
            due_at=None,
            finished_at=sa.func.current_timestamp(),
        )
    )
    op.create_index(
        "ux_runs_pending_reminder",
        "runs",
        ["workflow_id", "booking_uid"],
        unique=True,
        postgresql_where=sa.text(PENDING_REMINDER),
        sqlite_where=sa.text(PENDING_REMINDER),
    )


def downgrade() -> None:
    op.drop_index("ux_runs_pending_reminder", table_name="runs")
    op.drop_column("runs", "unfired")  # SQLite >= 3.35 drops a column in place
