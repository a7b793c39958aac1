"""bookings and time triggers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 21:14:13.330241
"""

from __future__ import annotations

import linktime.storage
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bookings",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("uid", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("start", linktime.storage.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end", linktime.storage.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("last_event_at", linktime.storage.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "uid"),
    )
    with op.batch_alter_table("bookings", schema=None) as batch_op:
        batch_op.create_index("ix_bookings_start", ["account_id", "start"], unique=False)

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "answer",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=False,
                server_default=sa.text("'{}'"),
            )
        )

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("booking_uid", sa.String(length=200), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch_op.create_index("ix_runs_booking", ["account_id", "booking_uid"], unique=False)
    # Runs from before this revision belong to their event's booking.
    op.execute(
        "UPDATE runs SET booking_uid = "
        "(SELECT events.booking_uid FROM events WHERE events.id = runs.event_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_booking")
        batch_op.drop_column("note")
        batch_op.drop_column("booking_uid")

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("answer")

    with op.batch_alter_table("bookings", schema=None) as batch_op:
        batch_op.drop_index("ix_bookings_start")

    op.drop_table("bookings")
