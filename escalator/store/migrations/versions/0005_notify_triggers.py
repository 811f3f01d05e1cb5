"""PostgreSQL: notify listeners of changed escalations and owed side effects, at commit.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

Triggers, so that every write path notifies without code of its own: ``escalator_changes``
carries the id of an escalation inserted or saved (its version moved; the reconciler's claims
do not count), ``escalator_outbox`` says that an outbox row was inserted, or given back or
made due earlier. NOTIFY inside a transaction is delivered only at its commit, and identical
notifications of one transaction are delivered once (PostgreSQL's NOTIFY documentation).
SQLite is one process whose in-process feed sees every commit: nothing to do there.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UPGRADE = (
    """
    CREATE FUNCTION escalator_notify_escalation() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('escalator_changes', NEW.id);
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION escalator_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('escalator_outbox', '');
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER escalations_notify_insert AFTER INSERT ON escalations
    FOR EACH ROW EXECUTE FUNCTION escalator_notify_escalation()
    """,
    """
    CREATE TRIGGER escalations_notify_update AFTER UPDATE ON escalations
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION escalator_notify_escalation()
    """,
    """
    CREATE TRIGGER outbox_notify_insert AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION escalator_notify_outbox()
    """,
    # A lease given back (shutdown) keeps its due time; a retry's give-back moves it later and
    # is not announced; a row made due earlier (a late cancel told its task) is.
    """
    CREATE TRIGGER outbox_notify_available AFTER UPDATE ON outbox
    FOR EACH ROW WHEN (
        NEW.lease_owner IS NULL
        AND NEW.due_at <= OLD.due_at
        AND (OLD.lease_owner IS NOT NULL OR NEW.due_at < OLD.due_at)
    )
    EXECUTE FUNCTION escalator_notify_outbox()
    """,
)

_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS outbox_notify_available ON outbox",
    "DROP TRIGGER IF EXISTS outbox_notify_insert ON outbox",
    "DROP TRIGGER IF EXISTS escalations_notify_update ON escalations",
    "DROP TRIGGER IF EXISTS escalations_notify_insert ON escalations",
    "DROP FUNCTION IF EXISTS escalator_notify_outbox()",
    "DROP FUNCTION IF EXISTS escalator_notify_escalation()",
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
