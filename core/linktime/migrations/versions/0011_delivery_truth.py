"""delivery truth: delivery status on attempts, suppression list (and the reports applied to
it), SMS credits, endpoint health

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from linktime.storage import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ATTEMPT_COLUMNS: tuple[sa.Column[object], ...] = (
    sa.Column("delivery_status", sa.String(20), nullable=True),
    sa.Column("delivery_updated_at", UTCDateTime(), nullable=True),
    sa.Column("delivery_error_code", sa.String(100), nullable=True),
    sa.Column("delivery_error", sa.Text(), nullable=True),
    sa.Column("endpoint_id", sa.String(40), nullable=True),
)


def _account() -> sa.Column[str]:
    return sa.Column(
        "account_id",
        sa.String(40),
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    )


def upgrade() -> None:
    # Plain ADD COLUMNs (see 0006): attempts before it have no delivery status.
    for column in _ATTEMPT_COLUMNS:
        op.add_column("attempts", column)
    awaiting = sa.text("delivery_status IN ('accepted', 'sent')")  # storage.AWAITING_REPORT
    op.create_index(
        "ix_attempts_external",
        "attempts",
        ["external_id"],
        postgresql_where=awaiting,
        sqlite_where=awaiting,
    )
    op.create_index(
        "ix_attempts_endpoint",
        "attempts",
        ["endpoint_id", "started_at"],
        postgresql_where=sa.text("endpoint_id IS NOT NULL"),
        sqlite_where=sa.text("endpoint_id IS NOT NULL"),
    )
    op.create_table(
        "suppressions",
        _account(),
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "callback_receipts",
        _account(),
        sa.Column("receipt", sa.String(200), primary_key=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "credit_usage",
        _account(),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("kind", sa.String(20), primary_key=True),
        sa.Column("used", sa.Integer(), nullable=False),
    )
    op.create_table(
        "credit_charges",
        sa.Column(
            "step_id",
            sa.String(40),
            sa.ForeignKey("run_steps.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "endpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("url_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        sa.Column("failing_since", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("account_id", "action", "url_hash"),
    )


def downgrade() -> None:
    tables = ("endpoints", "credit_charges", "credit_usage", "callback_receipts", "suppressions")
    for table in tables:
        op.drop_table(table)
    op.drop_index("ix_attempts_endpoint", "attempts")
    op.drop_index("ix_attempts_external", "attempts")
    with op.batch_alter_table("attempts") as batch:
        for column in _ATTEMPT_COLUMNS:
            batch.drop_column(column.name)
