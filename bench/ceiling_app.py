"""The ceiling for `POST /escalations`: a trivial aiohttp handler, one row per request.

What the machine can do for an acknowledged write with nothing of escalator in the way: parse
the JSON body, INSERT one row in its own transaction (committed before the answer), answer 201.
Run as its own process by bench/ack_bench.py:

    python bench/ceiling_app.py --port 8081 --db sqlite:///ceiling.db   # WAL, synchronous=FULL
    python bench/ceiling_app.py --port 8081 --db postgresql://postgres@127.0.0.1/db --pool 32
    python bench/ceiling_app.py --port 8081 --db none                   # no database at all

SQLite: one aiosqlite connection (SQLite has one writer), WAL, synchronous=FULL, autocommit,
so each INSERT is a transaction and an fsync. PostgreSQL: an asyncpg pool of `--pool`
connections, the server's default durability (synchronous_commit=on).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

Insert = Callable[[str, str, str], Awaitable[None]]
INSERT_KEY = web.AppKey("insert", Insert)
_SQLITE_TABLE = """CREATE TABLE IF NOT EXISTS ceiling_rows (
    id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL
)"""
_POSTGRES_TABLE = """CREATE TABLE IF NOT EXISTS ceiling_rows (
    id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, body TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
)"""
_INSERT = "INSERT INTO ceiling_rows (id, conversation_id, body, created_at) VALUES"


async def create(request: web.Request) -> web.Response:
    """Parse, insert one row (committed), answer 201 with its id."""
    raw = await request.text()
    body = json.loads(raw)
    row_id = uuid.uuid4().hex
    insert = request.app.get(INSERT_KEY)
    if insert is not None:
        await insert(row_id, str(body["conversation_id"]), raw)
    return web.json_response({"id": row_id}, status=201)


async def ready(request: web.Request) -> web.Response:
    """200 once the database is open."""
    return web.json_response({"status": "ok"})


def _sqlite(path: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        import aiosqlite

        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute(_SQLITE_TABLE)

        async def insert(row_id: str, conversation_id: str, body: str) -> None:
            # One call on aiosqlite's thread: execute (an autocommit transaction), close.
            await db.execute_insert(
                f"{_INSERT} (?, ?, ?, ?)", (row_id, conversation_id, body, time.time())
            )

        app[INSERT_KEY] = insert
        yield
        await db.close()

    return context


def _postgres(url: str, pool_size: int) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        import asyncpg

        pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
        await pool.execute(_POSTGRES_TABLE)

        async def insert(row_id: str, conversation_id: str, body: str) -> None:
            await pool.execute(
                f"{_INSERT} ($1, $2, $3, $4)", row_id, conversation_id, body, time.time()
            )

        app[INSERT_KEY] = insert
        yield
        await pool.close()

    return context


def create_app(db: str, pool_size: int) -> web.Application:
    """The app: `POST /escalations` and `GET /readyz`, on `db` (`none` for no database)."""
    app = web.Application()
    if db.startswith("sqlite:///"):
        app.cleanup_ctx.append(_sqlite(db.removeprefix("sqlite:///")))
    elif db.startswith(("postgresql://", "postgres://")):
        app.cleanup_ctx.append(_postgres(db, pool_size))
    elif db != "none":
        raise SystemExit(f"--db: expected sqlite:///PATH, postgresql://... or none, got {db!r}")
    app.router.add_post("/escalations", create)
    app.router.add_get("/readyz", ready)
    return app


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", default="none", help="sqlite:///PATH, postgresql://... or none")
    parser.add_argument("--pool", type=int, default=32, help="PostgreSQL connections")
    args = parser.parse_args()
    web.run_app(
        create_app(args.db, args.pool),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
