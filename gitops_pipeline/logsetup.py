"""Logging: one line per event, carrying the pipeline and the task id, as text or JSON."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar

current_pipeline: ContextVar[str] = ContextVar("current_pipeline", default="-")
current_task_id: ContextVar[str] = ContextVar("current_task_id", default="-")

TEXT_FORMAT = (
    "%(asctime)s %(levelname)s pipeline=%(pipeline)s task=%(task_id)s %(name)s: %(message)s"
)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.pipeline = current_pipeline.get()
        record.task_id = current_task_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "pipeline": getattr(record, "pipeline", "-"),
            "task_id": getattr(record, "task_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    """Replace the root handlers with one stderr handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
