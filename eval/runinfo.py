"""What a benchmark report records about the run: the machine, the commit, the command."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from typing import Any


def machine() -> dict[str, Any]:
    """The machine, the commit (`+changes` when the tracked files differ from it) and the load
    average before the run: figures from a busy or changed tree are read as such."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        "commit": commit + ("+changes" if dirty else ""),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def command_line() -> str:
    return shlex.join(["python", *sys.argv])
