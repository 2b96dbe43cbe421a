"""Where conversations live: LangGraph's checkpointer plus a small index of threads.

The checkpointer keeps each thread's graph state (messages, citations); the index answers what
the checkpointer cannot cheaply: which threads a tenant owns, their titles and times. Both sit
in one database: SQLite in the data dir by default, PostgreSQL when `postgres_url` is set.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypedDict
from urllib.parse import urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver

from agent.errors import AgentragError
from agent.settings import Settings

TITLE_CHARS = 80
CONNECT_WAIT_S = 10.0
"""How long start-up waits for PostgreSQL to accept a connection."""
_SETUP_LOCK = 0x61677274  # advisory lock key held while creating tables ("agrt")


class ThreadStoreError(AgentragError):
    """The thread database cannot be reached or set up."""


class ThreadRecord(TypedDict):
    thread_id: str
    title: str
    created_at: float
    updated_at: float


class ThreadIndex(Protocol):
    async def create(self, thread_id: str, tenant: str, title: str = "") -> ThreadRecord: ...

    async def get(self, thread_id: str, tenant: str) -> ThreadRecord | None: ...

    async def list(self, tenant: str, limit: int = 100) -> list[ThreadRecord]: ...

    async def touch(self, thread_id: str, tenant: str, title: str) -> None: ...

    async def delete(self, thread_id: str, tenant: str) -> bool: ...

    async def record_trace(self, trace_id: str, tenant: str, thread_id: str) -> None: ...

    async def trace_thread(self, trace_id: str, tenant: str) -> str | None:
        """The thread of the tenant's traced turn `trace_id`, or None (none, or not theirs)."""
        ...


def title_of(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


INDEX_FILE = "thread-index.sqlite"
"""The thread index's own SQLite file, next to `threads.sqlite` (the checkpoints)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agentrag_threads (
    thread_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)
"""
_INDEX = (
    "CREATE INDEX IF NOT EXISTS agentrag_threads_tenant ON agentrag_threads (tenant, updated_at)"
)
_TRACES = """
CREATE TABLE IF NOT EXISTS agentrag_traces (
    trace_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
)
"""
"""Which tenant each traced turn belongs to: feedback on a trace is taken from its tenant only."""


def _record(row: Any) -> ThreadRecord:
    return {
        "thread_id": row[0],
        "title": row[1],
        "created_at": float(row[2]),
        "updated_at": float(row[3]),
    }


class SqliteThreadIndex:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def setup(self) -> None:
        await self.conn.execute(_SCHEMA)
        await self.conn.execute(_INDEX)
        await self.conn.execute(_TRACES)
        await self.conn.commit()

    async def adopt(self, earlier: Path) -> None:
        """Threads and traces an earlier version kept in the checkpoint file, moved into this
        index (while it is still empty)."""
        async with self.conn.execute("SELECT count(*) FROM agentrag_threads") as cur:
            row = await cur.fetchone()
        if (row and row[0]) or not earlier.exists():
            return
        await self.conn.execute("ATTACH DATABASE ? AS earlier", (str(earlier),))
        try:
            async with self.conn.execute(
                "SELECT name FROM earlier.sqlite_master WHERE type = 'table' "
                "AND name IN ('agentrag_threads', 'agentrag_traces')"
            ) as cur:
                tables = {r[0] for r in await cur.fetchall()}
            for table in sorted(tables):
                await self.conn.execute(
                    f"INSERT OR IGNORE INTO {table} SELECT * FROM earlier.{table}"
                )
            await self.conn.commit()
            for table in sorted(tables):  # moved, not copied: never adopted a second time
                await self.conn.execute(f"DROP TABLE earlier.{table}")
            await self.conn.commit()
        finally:
            await self.conn.execute("DETACH DATABASE earlier")

    async def create(self, thread_id: str, tenant: str, title: str = "") -> ThreadRecord:
        now = time.time()
        await self.conn.execute(
            "INSERT INTO agentrag_threads (thread_id, tenant, title, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (thread_id, tenant, title, now, now),
        )
        await self.conn.commit()
        return {"thread_id": thread_id, "title": title, "created_at": now, "updated_at": now}

    async def get(self, thread_id: str, tenant: str) -> ThreadRecord | None:
        async with self.conn.execute(
            "SELECT thread_id, title, created_at, updated_at FROM agentrag_threads "
            "WHERE thread_id = ? AND tenant = ?",
            (thread_id, tenant),
        ) as cur:
            row = await cur.fetchone()
        return _record(row) if row else None

    async def list(self, tenant: str, limit: int = 100) -> list[ThreadRecord]:
        async with self.conn.execute(
            "SELECT thread_id, title, created_at, updated_at FROM agentrag_threads "
            "WHERE tenant = ? ORDER BY updated_at DESC LIMIT ?",
            (tenant, limit),
        ) as cur:
            rows = await cur.fetchall()
        return [_record(r) for r in rows]

    async def touch(self, thread_id: str, tenant: str, title: str) -> None:
        await self.conn.execute(
            "UPDATE agentrag_threads SET updated_at = ?, "
            "title = CASE WHEN title = '' THEN ? ELSE title END "
            "WHERE thread_id = ? AND tenant = ?",
            (time.time(), title, thread_id, tenant),
        )
        await self.conn.commit()

    async def delete(self, thread_id: str, tenant: str) -> bool:
        cur = await self.conn.execute(
            "DELETE FROM agentrag_threads WHERE thread_id = ? AND tenant = ?", (thread_id, tenant)
        )
        await self.conn.commit()
        return bool(cur.rowcount)

    async def record_trace(self, trace_id: str, tenant: str, thread_id: str) -> None:
        await self.conn.execute(
            "INSERT OR IGNORE INTO agentrag_traces (trace_id, tenant, thread_id, created_at) "
            "VALUES (?, ?, ?, ?)",
            (trace_id, tenant, thread_id, time.time()),
        )
        await self.conn.commit()

    async def trace_thread(self, trace_id: str, tenant: str) -> str | None:
        async with self.conn.execute(
            "SELECT thread_id FROM agentrag_traces WHERE trace_id = ? AND tenant = ?",
            (trace_id, tenant),
        ) as cur:
            row = await cur.fetchone()
        return str(row[0]) if row else None


class PostgresThreadIndex:
    """The index in PostgreSQL, on the checkpointer's pool (whose connections hand out dict
    rows and commit every statement); `_set_up` creates its table."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def create(self, thread_id: str, tenant: str, title: str = "") -> ThreadRecord:
        now = time.time()
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO agentrag_threads (thread_id, tenant, title, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (thread_id, tenant, title, now, now),
            )
        return {"thread_id": thread_id, "title": title, "created_at": now, "updated_at": now}

    async def get(self, thread_id: str, tenant: str) -> ThreadRecord | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT thread_id, title, created_at, updated_at FROM agentrag_threads "
                "WHERE thread_id = %s AND tenant = %s",
                (thread_id, tenant),
            )
            row = await cur.fetchone()
        return _record(_values(row)) if row else None

    async def list(self, tenant: str, limit: int = 100) -> list[ThreadRecord]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT thread_id, title, created_at, updated_at FROM agentrag_threads "
                "WHERE tenant = %s ORDER BY updated_at DESC LIMIT %s",
                (tenant, limit),
            )
            rows = await cur.fetchall()
        return [_record(_values(r)) for r in rows]

    async def touch(self, thread_id: str, tenant: str, title: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE agentrag_threads SET updated_at = %s, "
                "title = CASE WHEN title = '' THEN %s ELSE title END "
                "WHERE thread_id = %s AND tenant = %s",
                (time.time(), title, thread_id, tenant),
            )

    async def delete(self, thread_id: str, tenant: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM agentrag_threads WHERE thread_id = %s AND tenant = %s",
                (thread_id, tenant),
            )
            return bool(cur.rowcount)

    async def record_trace(self, trace_id: str, tenant: str, thread_id: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO agentrag_traces (trace_id, tenant, thread_id, created_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (trace_id) DO NOTHING",
                (trace_id, tenant, thread_id, time.time()),
            )

    async def trace_thread(self, trace_id: str, tenant: str) -> str | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT thread_id FROM agentrag_traces WHERE trace_id = %s AND tenant = %s",
                (trace_id, tenant),
            )
            row = await cur.fetchone()
        return str(_values(row)[0]) if row else None


def _values(row: Any) -> Any:
    """The checkpointer's pool hands out dict rows; the index reads positions."""
    return list(row.values()) if isinstance(row, dict) else row


def store_errors() -> tuple[type[BaseException], ...]:
    """What the thread stores raise when their database is locked, gone or refusing: a turn
    that meets one ends with `thread_store_unavailable`, not a bug report."""
    errors: list[type[BaseException]] = [sqlite3.Error]
    try:
        import psycopg
        import psycopg_pool

        errors += [psycopg.Error, psycopg_pool.PoolTimeout]
    except ImportError:  # the Postgres extra is not installed
        pass
    return tuple(errors)


@dataclass
class Persistence:
    checkpointer: BaseCheckpointSaver[Any]
    threads: ThreadIndex
    backend: str


@asynccontextmanager
async def open_persistence(settings: Settings) -> AsyncIterator[Persistence]:
    """Open the thread store named by settings, creating its tables on first use."""
    if settings.postgres_url:
        async with _postgres(settings.postgres_url) as persistence:
            yield persistence
        return
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(
        str(settings.data_dir / "threads.sqlite")
    ) as saver:
        await saver.setup()
        await saver.conn.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL never corrupts the database; a power cut may lose the last
        # commits. FULL would fsync every checkpoint write, serialising all turns on the disk.
        await saver.conn.execute("PRAGMA synchronous=NORMAL")
        busy_ms = round(settings.thread_db_busy_timeout_s * 1000)
        await saver.conn.execute(f"PRAGMA busy_timeout={busy_ms}")
        # The index has its own connection and its own file: listing, creating or touching a
        # thread never waits for the write lock behind the checkpoint writes of running turns
        # (sharing one file, under sustained load the index starved past any busy timeout).
        async with aiosqlite.connect(settings.data_dir / INDEX_FILE) as conn:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute(f"PRAGMA busy_timeout={busy_ms}")
            index = SqliteThreadIndex(conn)
            await index.setup()
            await index.adopt(settings.data_dir / "threads.sqlite")
            yield Persistence(checkpointer=saver, threads=index, backend="sqlite")


@asynccontextmanager
async def _postgres(url: str) -> AsyncIterator[Persistence]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    await _set_up(url)
    async with AsyncConnectionPool(
        url,
        min_size=1,
        max_size=10,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        # A restarted or failed-over database leaves dead connections in the pool: check each
        # one before handing it out rather than fail the request that gets it.
        check=AsyncConnectionPool.check_connection,
    ) as pool:
        await pool.wait(timeout=CONNECT_WAIT_S)
        saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        yield Persistence(checkpointer=saver, threads=PostgresThreadIndex(pool), backend="postgres")


async def _set_up(url: str) -> None:
    """Create or migrate the checkpointer's tables and the index. Instances starting together
    on a new database would race to create the same tables and migration rows, so this runs
    under a session advisory lock: one instance at a time, released when the connection ends."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    async with await _connect(url) as conn:
        # Polled, not waited on: a statement blocked on the lock is an open transaction, and
        # the migrations' CREATE INDEX CONCURRENTLY waits for every open transaction.
        while not await _try_setup_lock(conn):
            await asyncio.sleep(0.1)
        await AsyncPostgresSaver(conn).setup()
        await conn.execute(_SCHEMA)
        await conn.execute(_INDEX)
        await conn.execute(_TRACES)


async def _try_setup_lock(conn: Any) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (_SETUP_LOCK,))
    row = await cur.fetchone()
    return bool(row and row["locked"])


async def _connect(url: str) -> Any:
    """One connection, retried for CONNECT_WAIT_S (a database container may still be starting),
    then a ThreadStoreError that names the database, never its password."""
    import psycopg
    from psycopg.rows import dict_row

    deadline = time.monotonic() + CONNECT_WAIT_S
    while True:
        try:
            return await psycopg.AsyncConnection.connect(
                url, autocommit=True, prepare_threshold=0, row_factory=dict_row, connect_timeout=2
            )
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                reason = " ".join(str(exc).split())
                raise ThreadStoreError(
                    f"Cannot connect to PostgreSQL at {redact_url(url)} (postgres_url, "
                    f"AGENTRAG_POSTGRES_URL): {reason}. Check that the server is running, "
                    "the database exists and the credentials are right, or unset postgres_url "
                    "to keep threads in SQLite under the data dir."
                ) from None
            await asyncio.sleep(0.25)


def redact_url(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
