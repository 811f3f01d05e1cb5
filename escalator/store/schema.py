"""The tables, as SQLAlchemy Core metadata; migrations are checked against these."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

__all__ = [
    "Json",
    "UtcDateTime",
    "escalations",
    "events",
    "history",
    "idempotency_keys",
    "metadata",
    "outbox",
]


class UtcDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime on both databases (SQLite keeps no zone, so it stores naive UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

_OPEN = "status IN ('received', 'queued', 'reserved', 'assigned')"

escalations = sa.Table(
    "escalations",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
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
    sa.Column("task_sid", sa.String(34), nullable=True, unique=True),
    sa.Column("worker_sid", sa.String(34), nullable=True),
    sa.Column("worker_name", sa.String(256), nullable=True),
    sa.Column("error", Json, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # When the reconciler may re-read this escalation from TaskRouter again (None: when stale).
    sa.Column("reconcile_after", UtcDateTime, nullable=True),
    sa.Index("ix_escalations_conversation_id", "conversation_id"),
    sa.Index("ix_escalations_status_updated_at", "status", "updated_at"),
    # One open escalation per conversation, enforced by the database, not check-then-insert.
    sa.Index(
        "uq_escalations_open_conversation",
        "conversation_id",
        unique=True,
        sqlite_where=sa.text(_OPEN),
        postgresql_where=sa.text(_OPEN),
    ),
)

history = sa.Table(
    "escalation_history",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column(
        "escalation_id",
        sa.String(40),
        sa.ForeignKey("escalations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.Column("worker_sid", sa.String(34), nullable=True),
    sa.Column("reservation_sid", sa.String(34), nullable=True),
    sa.Column("detail", Json, nullable=True),
    sa.Index("ix_escalation_history_escalation_id", "escalation_id", "id"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column(
        "escalation_id",
        sa.String(40),
        sa.ForeignKey("escalations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("due_at", UtcDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("ambiguous", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", UtcDateTime, nullable=True),
    sa.Column("last_error", sa.String(512), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    # Parameters of side effects other than creating the task (e.g. which worker to reset).
    sa.Column("payload", Json, nullable=True),
    sa.Index("ix_outbox_due_at", "due_at"),
)

# TaskRouter events applied to escalations, each stored once under its key. Only ids, type,
# times and reason: the task's and the worker's attributes (customer data) are never kept.
events = sa.Table(
    "taskrouter_events",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column(
        "escalation_id",
        sa.String(40),
        sa.ForeignKey("escalations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("task_sid", sa.String(34), nullable=True),
    sa.Column("reservation_sid", sa.String(34), nullable=True),
    sa.Column("worker_sid", sa.String(34), nullable=True),
    sa.Column("reason", sa.String(200), nullable=True),
    sa.Column("occurred_at", UtcDateTime, nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Index("ix_taskrouter_events_escalation_id", "escalation_id"),
)

# Idempotency-Key of POST /escalations (IETF httpapi draft), per API key, until it expires. The
# row is claimed first in the transaction that creates the escalation, so the foreign key is
# checked at commit.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("scope", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column(
        "escalation_id",
        sa.String(40),
        sa.ForeignKey("escalations.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
        nullable=False,
    ),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Index("ix_idempotency_keys_expires_at", "expires_at"),
)
