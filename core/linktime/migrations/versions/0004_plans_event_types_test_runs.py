"""plans, event types, test runs, event decisions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 21:34:36.854486
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "decisions",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=False,
                server_default=sa.text("'[]'"),
            )
        )

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("test", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column(
                "continue_when_blocked", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )

    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "event_types",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=False,
                server_default=sa.text("'[]'"),
            )
        )
        batch_op.add_column(
            sa.Column(
                "continue_when_blocked", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_column("continue_when_blocked")
        batch_op.drop_column("event_types")

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("continue_when_blocked")
        batch_op.drop_column("test")

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("decisions")
