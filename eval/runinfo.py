"""What a benchmark report records about the run: the machine, the commit, the command."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from typing import Any


def commit() -> str:
    """The short commit, with `+changes` when the tracked files differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("+changes" if dirty else "")


def load_average() -> list[float]:
    """1, 5 and 15-minute load: on a shared machine, what else was running shows here."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """The machine, the commit and the load average before the run: figures from a busy or
    changed tree are read as such."""
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        "commit": commit(),
        "load_before": load_average(),
    }


def command_line() -> str:
    return shlex.join(["python", *sys.argv])
