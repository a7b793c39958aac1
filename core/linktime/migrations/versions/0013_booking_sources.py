"""booking sources: connections, their recent deliveries, source aliases, each event's source

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from linktime.storage import JSONType, UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _account(*, primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(
        "account_id",
        sa.String(40),
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=False,
    )


def upgrade() -> None:
    op.add_column("events", sa.Column("source", sa.String(100), nullable=True))
    op.create_table(
        "source_connections",
        sa.Column("id", sa.String(40), primary_key=True),
        _account(),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("settings", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_source_connections_account_id", "source_connections", ["account_id"])
    op.create_table(
        "source_deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "connection_id",
            sa.String(40),
            sa.ForeignKey("source_connections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("events", JSONType, nullable=False),
    )
    op.create_index(
        "ix_source_deliveries_connection", "source_deliveries", ["connection_id", "seq"]
    )
    op.create_table(
        "source_aliases",
        _account(primary_key=True),
        sa.Column("source", sa.String(100), primary_key=True),
        sa.Column("key", sa.String(500), primary_key=True),
        sa.Column("booking_uid", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    for table in ("source_aliases", "source_deliveries", "source_connections"):
        op.drop_table(table)
    with op.batch_alter_table("events") as batch:
        batch.drop_column("source")
