"""Escalations, their history, and the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from escalator.store.schema import Json, UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = "status IN ('received', 'queued', 'reserved', 'assigned')"
_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "escalations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("reason_code", sa.String(64), nullable=False),
        sa.Column("known_reason", sa.Boolean, nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("priority", sa.BigInteger, nullable=False),
        sa.Column("timeout", sa.Integer, nullable=False),
        sa.Column("skills", Json, nullable=False),
        sa.Column("route_attributes", Json, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("customer", Json, nullable=True),
        sa.Column("context", Json, nullable=False),
        sa.Column("call_sid", sa.String(34), nullable=True),
        sa.Column("status_callback_url", sa.String(2048), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("task_sid", sa.String(34), nullable=True),
        sa.Column("worker_sid", sa.String(34), nullable=True),
        sa.Column("worker_name", sa.String(256), nullable=True),
        sa.Column("error", Json, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_escalations"),
        sa.UniqueConstraint("task_sid", name="uq_escalations_task_sid"),
    )
    op.create_index("ix_escalations_conversation_id", "escalations", ["conversation_id"])
    op.create_index("ix_escalations_status_updated_at", "escalations", ["status", "updated_at"])
    op.create_index(
        "uq_escalations_open_conversation",
        "escalations",
        ["conversation_id"],
        unique=True,
        sqlite_where=sa.text(_OPEN),
        postgresql_where=sa.text(_OPEN),
    )
    op.create_table(
        "escalation_history",
        sa.Column("id", _BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("escalation_id", sa.String(40), nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("worker_sid", sa.String(34), nullable=True),
        sa.Column("reservation_sid", sa.String(34), nullable=True),
        sa.Column("detail", Json, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_escalation_history"),
        sa.ForeignKeyConstraint(
            ["escalation_id"],
            ["escalations.id"],
            ondelete="CASCADE",
            name="fk_escalation_history_escalation_id_escalations",
        ),
    )
    op.create_index(
        "ix_escalation_history_escalation_id", "escalation_history", ["escalation_id", "id"]
    )
    op.create_table(
        "outbox",
        sa.Column("id", _BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("escalation_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("due_at", UtcDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ambiguous", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", UtcDateTime, nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.ForeignKeyConstraint(
            ["escalation_id"],
            ["escalations.id"],
            ondelete="CASCADE",
            name="fk_outbox_escalation_id_escalations",
        ),
    )
    op.create_index("ix_outbox_due_at", "outbox", ["due_at"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("escalation_history")
    op.drop_table("escalations")
