"""Parse files someone uploaded in a child process with a memory cap and a deadline.

A document is input from a stranger: a 31 KB .docx can unpack to 20 MB of XML and keep a core
busy for minutes, a PDF can be built to exhaust memory. The loaders refuse what they can see
coming (page and part counts, sizes in the zip's directory); what they cannot see is bounded
here. The child (`python -m retrievers.parse_worker`) caps its own address space, so a file that
needs more memory fails alone with a reason, and the parent kills it when the deadline passes or
its caller stops waiting (the client went away). Either way nothing keeps running for nobody.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from agent.errors import IngestError
from retrievers.documents import Document, SkippedFile
from retrievers.loaders import load_paths

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.05
"""How often the parent looks at the child, the deadline and the stop signal."""
MAX_READERS = 2
"""Children reading uploads at once (each may use `memory_mb`); more uploads wait their turn,
their wait counted in their time limit."""
CPU_GRACE_S = 5
"""CPU seconds a child may use past its deadline before the kernel ends it (it is killed at
the deadline; this ends it when nobody is left to)."""
_READERS = threading.BoundedSemaphore(MAX_READERS)


class ParseLimitError(IngestError):
    """Parsing an upload passed its time limit, or was stopped because nobody waits for it."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_bounded(
    paths: Sequence[Path],
    *,
    timeout_s: float,
    memory_mb: int,
    stop: threading.Event | None = None,
) -> tuple[list[Document], list[SkippedFile]]:
    """`load_paths(paths)` in a child process of at most `memory_mb` MB of address space,
    killed after `timeout_s` or as soon as `stop` is set (`ParseLimitError` either way).

    A file that alone needs more memory than the cap is skipped with that reason; the others
    are parsed."""
    deadline = time.monotonic() + timeout_s
    while not _READERS.acquire(timeout=POLL_S):  # at most MAX_READERS children at once
        _check(stop, deadline, timeout_s)
    try:
        return _parse_in_child(paths, deadline, timeout_s, memory_mb, stop)
    finally:
        _READERS.release()


def _check(stop: threading.Event | None, deadline: float, timeout_s: float) -> None:
    if stop is not None and stop.is_set():
        raise ParseLimitError("Reading stopped: the client went away.", reason="stopped")
    if time.monotonic() > deadline:
        raise ParseLimitError(
            f"Reading the upload took longer than {timeout_s:g} s "
            "(AGENTRAG_UPLOAD_PARSE_TIMEOUT_S); split it or simplify it.",
            reason="time",
        )


def _parse_in_child(
    paths: Sequence[Path],
    deadline: float,
    timeout_s: float,
    memory_mb: int,
    stop: threading.Event | None,
) -> tuple[list[Document], list[SkippedFile]]:
    with tempfile.TemporaryDirectory(prefix="agentrag-parse-") as tmp:
        out = Path(tmp) / "parsed.pickle"
        log = Path(tmp) / "stderr.txt"
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        # the child's own CPU limit ends it even if this process dies before it can kill it
        cpu_s = math.ceil(max(deadline - time.monotonic(), 0)) + CPU_GRACE_S
        with log.open("wb") as errors:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "retrievers.parse_worker",
                    "--memory-mb",
                    str(memory_mb),
                    "--cpu-s",
                    str(cpu_s),
                    "--out",
                    str(out),
                    *map(str, paths),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,  # a file, not a pipe: a chatty child never blocks on a full pipe
            )
        try:
            finished = False
            while not finished:
                try:
                    child.wait(timeout=POLL_S)
                    finished = True
                except subprocess.TimeoutExpired:
                    pass
                # checked after the child ended too: the limit holds however it is reached
                _check(stop, deadline, timeout_s)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        stderr = log.read_text(errors="replace")
        if child.returncode != 0 or not out.is_file():
            last = stderr.strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
            raise IngestError(f"Reading the upload failed: {last[0]}")
        with out.open("rb") as f:
            documents, skipped = pickle.load(f)
    return documents, skipped


def _parse(
    paths: list[Path], memory_mb: int, cpu_s: int
) -> tuple[list[Document], list[SkippedFile]]:
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    documents: list[Document] = []
    skipped: list[SkippedFile] = []
    for path in paths:  # one file at a time: one that needs too much memory fails alone
        try:
            loaded, not_taken = load_paths([path])
        except MemoryError:
            skipped.append(
                SkippedFile(
                    path=str(path),
                    reason=f"reading it needs more than {memory_mb} MB "
                    "(AGENTRAG_UPLOAD_PARSE_MEMORY_MB)",
                )
            )
            continue
        documents.extend(loaded)
        skipped.extend(not_taken)
    return documents, skipped


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m retrievers.parse_worker")
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--cpu-s", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    result = _parse(args.paths, args.memory_mb, args.cpu_s)
    partial = args.out.with_suffix(".partial")
    with partial.open("wb") as f:
        pickle.dump(result, f)
    partial.rename(args.out)


if __name__ == "__main__":
    main()
