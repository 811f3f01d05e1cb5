"""Schema migrations with Alembic, run on escalator's own async engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from escalator.store.engine import WRITE

__all__ = ["current_revision", "head_revision", "migrate", "serves_revision"]

# An arbitrary, fixed key: replicas that start `escalator migrate` together take turns.
_MIGRATION_LOCK = 7_316_001


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


def head_revision() -> str:
    """The newest revision this version of escalator knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def serves_revision(revision: str | None) -> bool:
    """Whether this code can serve a database at ``revision``: at its head, or at a revision
    it does not know, which a newer release's migrate Job wrote. Migrations only add (expand
    first, remove a release later), so during a rolling deploy the previous release's pods stay
    ready instead of all going unready the moment the Job has run."""
    if revision is None:
        return False
    script = ScriptDirectory.from_config(_config())
    known = {entry.revision for entry in script.walk_revisions()}
    return revision == head_revision() or revision not in known


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    config = _config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema up to date; idempotent, and safe from several processes at once."""
    async with engine.connect() as connection:
        await connection.execution_options(**WRITE)
        async with connection.begin():
            await connection.run_sync(_upgrade)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)
