"""event search and paging: invitee emails by event (casefolded, indexed); indexes for the
Events page, a booking's timeline and the run log's pages

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 12:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from linktime.storage import invitee_emails
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BATCH = 1000
# start_test_run stores its event with this digest; a test's event is never searched.
TEST_DIGEST = "-"

events = sa.table(
    "events",
    sa.column("id", sa.String),
    sa.column("account_id", sa.String),
    sa.column("payload", sa.JSON().with_variant(JSONB(), "postgresql")),
    sa.column("payload_hash", sa.String),
)


def upgrade() -> None:
    op.create_index("ix_events_account", "events", ["account_id", "id"])
    op.create_index("ix_events_booking", "events", ["account_id", "booking_uid"])
    op.create_index("ix_runs_account", "runs", ["account_id", "id"])
    # Was (workflow_id, created_at): the run log now pages by id.
    op.drop_index("ix_runs_workflow", table_name="runs")
    op.create_index("ix_runs_workflow", "runs", ["workflow_id", "id"])
    emails = op.create_table(
        "event_emails",
        sa.Column(
            "account_id",
            sa.String(length=40),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("email", sa.String(length=320), primary_key=True),
        sa.Column(
            "event_pk",
            sa.String(length=40),
            sa.ForeignKey("events.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    op.create_index("ix_event_emails_event_pk", "event_emails", ["event_pk"])
    _backfill(op.get_bind(), emails)


def _backfill(conn: sa.Connection, emails: sa.Table) -> None:
    """The emails of the events already stored, casefolded in Python as new ones are, a batch
    at a time (by id, so memory stays flat however many there are)."""
    after = ""
    while True:
        batch = conn.execute(
            sa.select(events.c.id, events.c.account_id, events.c.payload)
            .where(events.c.id > after, events.c.payload_hash != TEST_DIGEST)
            .order_by(events.c.id)
            .limit(BATCH)
        ).all()
        if not batch:
            return
        rows = [
            {"account_id": e.account_id, "email": email, "event_pk": e.id}
            for e in batch
            for email in invitee_emails(e.payload.get("booking") or {})
        ]
        if rows:
            conn.execute(sa.insert(emails), rows)
        after = batch[-1].id


def downgrade() -> None:
    op.drop_table("event_emails")
    op.drop_index("ix_runs_workflow", table_name="runs")
    op.create_index("ix_runs_workflow", "runs", ["workflow_id", "created_at"])
    op.drop_index("ix_runs_account", table_name="runs")
    op.drop_index("ix_events_booking", table_name="events")
    op.drop_index("ix_events_account", table_name="events")
