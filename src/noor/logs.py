"""Structured logs: one JSON object per line on stderr, for `noor serve` and its workers."""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

# LogRecord attributes that are plumbing, not content; everything else passed in `extra=` is kept.
_PLAIN = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= {k: v for k, v in record.__dict__.items() if k not in _PLAIN and not k.startswith("_")}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def config(level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """A logging dictConfig for Noor's and uvicorn's loggers (also handed to uvicorn.run)."""
    formatter = {"()": JsonFormatter} if fmt == "json" else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    loggers = {name: {"handlers": ["stderr"], "level": level, "propagate": False} for name in ("noor", "uvicorn")}
    loggers["uvicorn.access"] = {"handlers": ["stderr"], "level": "WARNING", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"stderr": handler},
        "loggers": loggers,
    }


def setup(level: str = "INFO", fmt: str = "json") -> None:
    logging.config.dictConfig(config(level, fmt))
