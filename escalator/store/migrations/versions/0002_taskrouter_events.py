"""TaskRouter events stored once, and outbox payloads for side effects.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from escalator.store.schema import Json, UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("payload", Json, nullable=True))
    op.create_table(
        "taskrouter_events",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("escalation_id", sa.String(40), nullable=False),
        sa.Column("task_sid", sa.String(34), nullable=True),
        sa.Column("reservation_sid", sa.String(34), nullable=True),
        sa.Column("worker_sid", sa.String(34), nullable=True),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_taskrouter_events"),
        sa.ForeignKeyConstraint(
            ["escalation_id"],
            ["escalations.id"],
            ondelete="CASCADE",
            name="fk_taskrouter_events_escalation_id_escalations",
        ),
    )
    op.create_index("ix_taskrouter_events_escalation_id", "taskrouter_events", ["escalation_id"])


def downgrade() -> None:
    op.drop_table("taskrouter_events")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("payload")
