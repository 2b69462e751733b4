"""Structured JSON logs. Callers pass ids (event id, topic, offset) via `extra`, never patient data."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

import hl7

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # Exception type only: messages and tracebacks can quote patient data.
            entry["exc_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


_HL7_PACKAGE = os.path.dirname(hl7.__file__)


def _not_from_python_hl7(record: logging.LogRecord) -> bool:
    """python-hl7 logs raw field values (patient data) on malformed escapes, under a logger named
    after its file, so it is filtered by where the record comes from rather than by logger name."""
    return not record.pathname.startswith(_HL7_PACKAGE)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_not_from_python_hl7)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries whose DEBUG records quote SQL parameters or payloads (patient data): never below WARNING.
    for noisy in ("aiokafka", "sqlalchemy.engine", "alembic", "aiosqlite", "asyncpg", "httpcore", "multipart"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # uvicorn installs its own handlers; route them through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
