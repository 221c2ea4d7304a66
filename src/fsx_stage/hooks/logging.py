"""Structured, redacted logging for the hooks.

Every event is one line: a JSON object with ``event``, ``job_id`` and the event's fields,
written to syslog (the default), a file, or stderr. A hook's own stdout/stderr are seen by
no one, so this log is where an administrator learns why a hook did what it did.

Secrets never reach the log: a `RedactingFilter` on every handler rewrites each record
with `fsx_stage.redaction.REDACTOR` before it is formatted.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from fsx_stage.redaction import REDACTOR, Redactor

LOGGER_NAME = "fsx_stage"
SYSLOG_SOCKET = "/dev/log"


class RedactingFilter(logging.Filter):
    """Rewrites each record's message and structured fields without any secret."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redactor.redact(record.getMessage())
        record.args = None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = self._redactor.redact_value(fields)
        if record.exc_info:
            # Tracebacks are rendered here so that they are redacted like everything else.
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self._redactor.redact(text)
            record.exc_info = None
        return True


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: ts, level, event, job_id, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            line["job_id"] = job_id
        line["pid"] = record.process
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(key, value)
        if getattr(record, "event", None) is None:
            line.pop("event")
            line["message"] = record.getMessage()
        if record.exc_text:
            line["traceback"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False, separators=(",", ":"))


def _syslog_listens(path: str) -> bool:
    """Whether a syslog daemon answers on ``path`` (a socket file may outlive its daemon)."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        try:
            with socket.socket(socket.AF_UNIX, kind) as probe:
                probe.connect(path)
        except OSError:
            continue
        return True
    return False


def _handler_for(destination: str, fallback_file: Path | None) -> logging.Handler:
    if destination == "stderr":
        return logging.StreamHandler(sys.stderr)
    if destination == "syslog":
        if _syslog_listens(SYSLOG_SOCKET):
            handler = logging.handlers.SysLogHandler(
                address=SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
            handler.ident = "fsx-stage: "
            return handler
        # No syslog daemon on this node: a file under the state directory keeps the record.
        if fallback_file is not None:
            return _file_handler(fallback_file)
        return logging.StreamHandler(sys.stderr)
    return _file_handler(Path(destination))


class _ReopeningFileHandler(logging.handlers.WatchedFileHandler):
    """Reopens the file logrotate moved; a file that cannot be reopened (its directory
    removed, the disk full) costs the event and one line on stderr, never an exception
    raised into the transfer that logged (the stdlib's reopen raises it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reopenIfNeeded()
        except OSError as exc:
            sys.stderr.write(
                f"fsx-stage: cannot reopen the log {self.baseFilename} ({exc.strerror}): "
                f"event {getattr(record, 'event', record.levelname)} lost\n"
            )
            return
        logging.FileHandler.emit(self, record)


def _file_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create it private (the log may name users' paths and buckets); logrotate-friendly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.close(fd)
    return _ReopeningFileHandler(path, encoding="utf-8")


def setup_logging(
    destination: str = "syslog", level: str = "info", *, fallback_file: Path | None = None
) -> logging.Logger:
    """Send the ``fsx_stage`` logger's records to ``destination`` (syslog|stderr|a path)."""
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    handler = _handler_for(destination, fallback_file)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonLineFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


def emergency_log(job_id: int | None) -> EventLog:
    """A log for when the site config cannot be read: syslog if the node has it."""
    setup_logging("syslog", "info")
    return EventLog(job_id)


class EventLog:
    """Writes one structured line per event, each carrying the job id."""

    def __init__(self, job_id: int | None, logger: logging.Logger | None = None) -> None:
        self.job_id = job_id
        self._logger = logger or logging.getLogger(LOGGER_NAME)

    def event(self, event: str, level: int = logging.INFO, **fields: Any) -> None:
        self._logger.log(
            level, event, extra={"event": event, "job_id": self.job_id, "fields": fields}
        )

    def info(self, event: str, **fields: Any) -> None:
        self.event(event, logging.INFO, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.event(event, logging.WARNING, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.event(event, logging.ERROR, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._logger.error(
            event,
            exc_info=True,
            extra={"event": event, "job_id": self.job_id, "fields": fields},
        )
