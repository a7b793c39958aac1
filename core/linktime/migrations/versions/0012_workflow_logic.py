"""workflow logic: workflow conditions, per-step `when` and fallback, delays parked on steps,
the booking's paid and no-show state

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from linktime.storage import JSONType, UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _columns() -> dict[str, tuple[sa.Column[object], ...]]:
    return {
        "workflows": (
            sa.Column("conditions", JSONType, nullable=False, server_default=sa.text("'[]'")),
        ),
        "workflow_steps": (
            sa.Column("when", JSONType, nullable=True),
            sa.Column("fallback", JSONType, nullable=True),
        ),
        "run_steps": (
            sa.Column("when", JSONType, nullable=True),
            sa.Column("fallback", JSONType, nullable=True),
            sa.Column("fallback_at", sa.Integer(), nullable=True),
            sa.Column("wait_until", UTCDateTime(), nullable=True),
            sa.Column("wait_follows", sa.Boolean(), nullable=False, server_default=sa.false()),
            sa.Column("retry_base", sa.Integer(), nullable=False, server_default="0"),
        ),
        "attempts": (sa.Column("action", sa.String(100), nullable=True),),
        "bookings": (
            sa.Column("paid_at", UTCDateTime(), nullable=True),
            sa.Column("no_show", sa.Boolean(), nullable=False, server_default=sa.false()),
        ),
    }


def upgrade() -> None:
    # Plain ADD COLUMNs (see 0006): rows before it have no conditions, no fallback, no wait.
    for table, columns in _columns().items():
        for column in columns:
            op.add_column(table, column)


def downgrade() -> None:
    for table, columns in _columns().items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column.name)
