"""Where conversations live: LangGraph's checkpointer plus a small index of threads.

The checkpointer keeps each thread's graph state (messages, citations); the index answers what
the checkpointer cannot cheaply: which threads a tenant owns, their titles and times. Both sit
in one database: SQLite in the data dir by default, PostgreSQL when `postgres_url` is set.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver

from agent.settings import Settings

TITLE_CHARS = 80


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


def title_of(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


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
        await self.conn.commit()

    async def create(self, thread_id: str, tenant: str, title: str = "") -> ThreadRecord:
        now = time.time()
        await self.conn.execute(
            "INSERT INTO agentrag_threads VALUES (?, ?, ?, ?, ?)",
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


class PostgresThreadIndex:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return cur

    async def setup(self) -> None:
        await self._execute(_SCHEMA)
        await self._execute(_INDEX)

    async def create(self, thread_id: str, tenant: str, title: str = "") -> ThreadRecord:
        now = time.time()
        await self._execute(
            "INSERT INTO agentrag_threads VALUES (%s, %s, %s, %s, %s)",
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
        await self._execute(
            "UPDATE agentrag_threads SET updated_at = %s, "
            "title = CASE WHEN title = '' THEN %s ELSE title END "
            "WHERE thread_id = %s AND tenant = %s",
            (time.time(), title, thread_id, tenant),
        )

    async def delete(self, thread_id: str, tenant: str) -> bool:
        cur = await self._execute(
            "DELETE FROM agentrag_threads WHERE thread_id = %s AND tenant = %s",
            (thread_id, tenant),
        )
        return bool(cur.rowcount)


def _values(row: Any) -> Any:
    """The checkpointer's pool hands out dict rows; the index reads positions."""
    return list(row.values()) if isinstance(row, dict) else row


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
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(
        str(settings.data_dir / "threads.sqlite")
    ) as saver:
        await saver.setup()
        await saver.conn.execute("PRAGMA journal_mode=WAL")
        index = SqliteThreadIndex(saver.conn)
        await index.setup()
        yield Persistence(checkpointer=saver, threads=index, backend="sqlite")


@asynccontextmanager
async def _postgres(url: str) -> AsyncIterator[Persistence]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(
        url,
        min_size=1,
        max_size=10,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    ) as pool:
        await pool.wait(timeout=10)
        saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        await saver.setup()
        index = PostgresThreadIndex(pool)
        await index.setup()
        yield Persistence(checkpointer=saver, threads=index, backend="postgres")
