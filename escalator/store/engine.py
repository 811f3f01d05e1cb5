"""Database engines: the URL a user gives, turned into a tuned async SQLAlchemy engine."""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["WRITE", "async_url", "create_engine", "create_thread_engine"]

_SQLITE_POOL = 4
_SQLITE_CACHE_KIB = 512
_WRITER_CACHE_KIB = 2048
# Execution option that makes a SQLite transaction take the write lock up front.
WRITE = {"escalator_write": True}
# SQLSTATEs of a PostgreSQL that cannot serve now but will: class 08 (connection exception),
# 57P01-57P03 (terminated by a shutdown or crash, "the database system is starting up" or
# "shutting down"), 53300 (too many connections). The asyncpg dialect reports them as a plain
# DBAPIError, which would be a 500; as disconnects they become StoreUnavailable (503) and the
# pool drops its connections to that server.
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def async_url(url: str) -> str:
    """``sqlite:///x`` or ``postgresql://…`` as the async driver URL SQLAlchemy needs."""
    if url.startswith("sqlite:"):
        return url.replace("sqlite:", "sqlite+aiosqlite:", 1)
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def _tune_sqlite(engine: Engine, synchronous: str, *, cache_kib: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the driver, issue BEGIN (the driver's implicit BEGIN is deferred
        # and cannot be told to take the write lock first).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed (acknowledged) escalation survives power loss, not only a crash.
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=5000")
        # Each connection keeps its own page cache (2 MiB by default): readers share the
        # operating system's cache of the file and get a small one, the one writer the default.
        # With 2 MiB for every connection, 10,000 open escalations took RSS to 129 MiB; with
        # these, 115 MiB (make bench, scenario 6).
        cursor.execute(f"PRAGMA cache_size=-{cache_kib}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # BEGIN IMMEDIATE for writes: two deferred writers would otherwise deadlock on upgrade.
        write = connection.get_execution_options().get("escalator_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _flag_unavailable(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        sqlstate = getattr(context.original_exception, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            context.is_disconnect = True


def create_engine(
    url: str,
    *,
    sqlite_synchronous: Literal["FULL", "EXTRA", "NORMAL"] = "FULL",
    pool_size: int = 10,
) -> AsyncEngine:
    """An async engine for ``url``, with SQLite in WAL mode and PostgreSQL with a checked pool."""
    driver_url = async_url(url)
    # hide_parameters: a driver error's text must not carry the summary or contact details.
    if driver_url.startswith("sqlite"):
        # One core runs every statement, so more connections only add memory: readers queue
        # for one of these, the writer thread has its own (create_thread_engine).
        engine = create_async_engine(
            driver_url,
            connect_args={"timeout": 5},
            hide_parameters=True,
            pool_size=_SQLITE_POOL,
            max_overflow=_SQLITE_POOL,
            pool_timeout=10,
        )
        _tune_sqlite(engine.sync_engine, sqlite_synchronous, cache_kib=_SQLITE_CACHE_KIB)
        return engine
    engine = create_async_engine(
        driver_url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        # A connection that a restart closed is found at checkout and replaced, not used.
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={"timeout": 5, "command_timeout": 10},
    )
    _flag_unavailable(engine)
    return engine


def create_thread_engine(
    url: str, *, sqlite_synchronous: Literal["FULL", "EXTRA", "NORMAL"] = "FULL"
) -> Engine | None:
    """For a SQLite file, a synchronous engine on the same file, tuned the same way, for a
    transaction run whole in one worker thread; None for other databases."""
    if not url.startswith("sqlite:") or url.rstrip("/") in ("sqlite:", "sqlite:///:memory:"):
        return None
    engine = sa.create_engine(url, connect_args={"timeout": 5}, hide_parameters=True)
    _tune_sqlite(engine, sqlite_synchronous, cache_kib=_WRITER_CACHE_KIB)
    return engine
