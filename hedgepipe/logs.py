"""Structured logs on stderr: ``key=value`` text for people, JSON lines with ``--log-json``.

Bad input is logged once per kind with its context, then only counted, with a summary of
how many more there were at most once a minute: a flood of bad frames must not become a
flood of log lines.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_RESERVED = set(vars(logging.makeLogRecord({})))


def _fields(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and k != "message"}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_iso(record.created), record.levelname, record.name, record.getMessage()]
        for k, v in _fields(record).items():
            parts.append(f"{k}={v!r}" if isinstance(v, str) and (" " in v or not v) else f"{k}={v}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj = {"ts": _iso(record.created), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        obj.update(_fields(record))
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


def setup_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class OncePerKind:
    """Log the first occurrence of each kind with context; afterwards count and summarise."""

    def __init__(self, logger: logging.Logger, summary_every_s: float = 60.0, clock=time.monotonic):
        self._log = logger
        self._every = summary_every_s
        self._clock = clock
        self._seen: dict[str, int] = {}  # kind -> occurrences not yet summarised
        self._last_summary = clock()

    def __call__(self, kind: str, message: str, level: int = logging.WARNING,
                 exc_info: bool = False, **context) -> None:
        if kind in self._seen:
            self._seen[kind] += 1
        else:
            self._seen[kind] = 0
            # A context key that LogRecord reserves ("message", "name", ...) would make the
            # log call itself raise; such keys get a prefix instead.
            extra = {("ctx_" + k if k in _RESERVED or k == "message" else k): v
                     for k, v in context.items()}
            self._log.log(level, message, exc_info=exc_info, extra={"kind": kind, **extra})
        now = self._clock()
        if now - self._last_summary >= self._every:
            self.summarise(now)

    def summarise(self, now: float | None = None) -> None:
        self._last_summary = self._clock() if now is None else now
        for kind, more in self._seen.items():
            if more:
                self._log.warning("%d more %s since the last report", more, kind,
                                  extra={"kind": kind, "count": more})
                self._seen[kind] = 0
