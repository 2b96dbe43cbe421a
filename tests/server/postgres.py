"""A real PostgreSQL server for tests: one per session, a fresh database per test.

The server is started from the local PostgreSQL binaries (Debian's `postgresql` package puts
them in /usr/lib/postgresql/<version>/bin), in a temporary directory, on a free loopback port,
with trust authentication and durability switched off (nothing here must survive a crash).
PostgreSQL refuses to run as root, so under root it runs as the `postgres` system user.

Absent binaries skip the tests that need the server, unless AGENTRAG_REQUIRE_POSTGRES=1 (set in
CI), where they fail instead: a CI machine without PostgreSQL must not pass silently.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.ports import free_port

REQUIRE_ENV = "AGENTRAG_REQUIRE_POSTGRES"
SERVER_USER = "postgres"
# Settings that trade durability for start-up and test speed.
FAST_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=100 -c shared_buffers=32MB"
)


def _unavailable(reason: str) -> None:
    """Skip, or fail when the environment says PostgreSQL tests must run."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: PostgreSQL tests must run)", pytrace=False)
    pytest.skip(f"{reason}; install PostgreSQL (apt-get install postgresql) to run these tests")


def postgres_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: PATH first, then Debian's layout
    (newest version first)."""
    found = shutil.which("pg_ctl")
    if found:
        bindir = Path(found).resolve().parent
        if (bindir / "initdb").is_file():
            return bindir
    candidates = glob.glob("/usr/lib/postgresql/*/bin")

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    for candidate in sorted(candidates, key=version, reverse=True):
        bindir = Path(candidate)
        if all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


@dataclass
class PostgresServer:
    """A running server; `url(db)` names a database on it."""

    bindir: Path
    root: Path
    port: int
    run_as: pwd.struct_passwd | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        owner: dict[str, Any] = {}
        if self.run_as is not None:
            owner = {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []}
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC", "TZ": "UTC"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **owner,
        )

    def init(self) -> None:
        done = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SERVER_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} {FAST_OPTIONS}"
        data, log = str(self.data), str(self.log)
        done = self._run("pg_ctl", "start", "-w", "-t", "60", "-D", data, "-l", log, "-o", options)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{log}")

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def create_database(self) -> str:
        name = f"agentrag_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_postgres() -> PostgresServer:
    """Start a server (callers stop it); raises RuntimeError with the server's own words."""
    bindir = postgres_bin_dir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl, postgres) not found")
    run_as = None
    if os.geteuid() == 0:
        try:
            run_as = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise FileNotFoundError(
                f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as"
            ) from None
    root = Path(tempfile.mkdtemp(prefix="agentrag-pg-"))
    if run_as is not None:
        os.chown(root, run_as.pw_uid, run_as.pw_gid)
    server = PostgresServer(bindir, root, free_port(), run_as)
    try:
        server.init()
        for attempt in range(3):
            try:
                server.start()
                return server
            except RuntimeError:
                # Another process may have taken the port between choosing and binding it.
                if attempt == 2:
                    raise
                server.port = free_port()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = start_postgres()
    except FileNotFoundError as exc:
        _unavailable(str(exc))
        raise
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test, dropped after it."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)
