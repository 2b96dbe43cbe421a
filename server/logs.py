"""JSON log lines that carry the run and thread of the request being served."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar

run_id_var: ContextVar[str | None] = ContextVar("run_id", default=None)
thread_id_var: ContextVar[str | None] = ContextVar("thread_id", default=None)

logger = logging.getLogger("agentrag.server")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        run_id, thread_id = run_id_var.get(), thread_id_var.get()
        if run_id:
            entry["run_id"] = run_id
        if thread_id:
            entry["thread_id"] = thread_id
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(json_lines: bool, level: int = logging.INFO) -> None:
    """Idempotent: the app may be created many times in one process (tests)."""
    handler = next((h for h in logger.handlers if getattr(h, "_agentrag", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._agentrag = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(message)s")
    )
    logger.setLevel(level)
    logger.propagate = False


def log(level: int, message: str, **fields: object) -> None:
    logger.log(level, message, extra={"fields": fields})
