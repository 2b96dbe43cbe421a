"""The SQLite thread store: checkpoints and the thread index in separate files, and an index an
earlier version kept inside the checkpoint file adopted on start."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.settings import Settings, load_settings
from server.persistence import INDEX_FILE, open_persistence


def _settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


async def test_the_index_has_its_own_file(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    async with open_persistence(settings) as store:
        await store.threads.create("t-1", "alpha", "first")
    index = sqlite3.connect(settings.data_dir / INDEX_FILE)
    assert index.execute("SELECT thread_id FROM agentrag_threads").fetchall() == [("t-1",)]
    checkpoints = sqlite3.connect(settings.data_dir / "threads.sqlite")
    tables = {r[0] for r in checkpoints.execute("SELECT name FROM sqlite_master")}
    assert "agentrag_threads" not in tables and "checkpoints" in tables


async def test_threads_an_earlier_version_indexed_are_adopted_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.data_dir.mkdir(parents=True)
    earlier = sqlite3.connect(settings.data_dir / "threads.sqlite")
    earlier.execute(
        "CREATE TABLE agentrag_threads (thread_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
        "title TEXT NOT NULL DEFAULT '', created_at DOUBLE PRECISION NOT NULL, "
        "updated_at DOUBLE PRECISION NOT NULL)"
    )
    earlier.execute("INSERT INTO agentrag_threads VALUES ('old-1', 'alpha', 'kept', 1.0, 2.0)")
    earlier.commit()
    earlier.close()
    async with open_persistence(settings) as store:
        assert [r["thread_id"] for r in await store.threads.list("alpha")] == ["old-1"]
        assert await store.threads.delete("old-1", "alpha")
    async with open_persistence(settings) as store:  # not adopted again once the index has rows
        await store.threads.create("t-2", "alpha")
        assert [r["thread_id"] for r in await store.threads.list("alpha")] == ["t-2"]
