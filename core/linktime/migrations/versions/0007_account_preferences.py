"""account preferences: what the dashboard remembers (timezone, test recipients)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 11:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Not in batch mode (see 0006): a plain ADD COLUMN, with a default for the rows there.
    op.add_column(
        "accounts",
        sa.Column(
            "preferences",
            sa.JSON().with_variant(JSONB(), "postgresql"),
            nullable=False,
            server_default=sa.text("'{}'"),
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("preferences")
