"""PostgreSQL: announce only the outbox rows inserted without a lease.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

A new escalation's create row is written leased to the dispatcher of the process that wrote
it, which carries it out at once (the handoff): no dispatcher needs waking for it, and waking
every replica's dispatcher for it cost each one an empty lease transaction per escalation.
Rows inserted unleased are announced as before; the per-row notifications of one transaction
are delivered once (PostgreSQL's NOTIFY documentation). A previous release's pods, which write
every row unleased, are announced as they were.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UPGRADE = (
    "DROP TRIGGER IF EXISTS outbox_notify_insert ON outbox",
    """
    CREATE TRIGGER outbox_notify_insert AFTER INSERT ON outbox
    FOR EACH ROW WHEN (NEW.lease_owner IS NULL)
    EXECUTE FUNCTION escalator_notify_outbox()
    """,
)

_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS outbox_notify_insert ON outbox",
    """
    CREATE TRIGGER outbox_notify_insert AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION escalator_notify_outbox()
    """,
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in _DOWNGRADE:
        op.execute(statement)
