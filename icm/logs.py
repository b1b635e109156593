"""Logging set-up, and a throttle for messages that hostile input could repeat endlessly."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from icm.config import LogSettings
from icm.safetext import MAX_MESSAGE, capped, escaped

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup(settings: LogSettings) -> None:
    """Send ICM's logs to stderr in the configured level and format."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(OneLine())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class OneLine(logging.Filter):
    """Every message on one line and of bounded size, whatever callers and peers put in
    it (the traceback of an exception, our own code's, keeps its lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = escaped(capped(record.getMessage(), MAX_MESSAGE))
        record.msg, record.args = message, None
        return True


class Throttled:
    """Logs the first of a run of similar messages, then at most one per ``interval_s``,
    saying how many were suppressed in between."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval_s
        self._next = 0.0
        self._suppressed = 0

    def log(self, level: int, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, self._suppressed)
        self._logger.log(level, msg, *args, exc_info=exc_info)
        self._next = now + self._interval
        self._suppressed = 0

    def warning(self, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, msg, *args)

    def exception(self, msg: str, *args: Any) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=True)
