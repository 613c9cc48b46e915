"""Keep tokens out of logs: uvicorn logs every handshake's path with its query string."""

from __future__ import annotations

import logging


class RedactQueryStrings(logging.Filter):
    """Cut the query string from any path-like argument of a log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_has_query(a) for a in record.args):
            record.args = tuple(_redact(a) for a in record.args)
        elif isinstance(record.msg, str) and "?" in record.msg and "token=" in record.msg:
            record.msg = _redact(record.msg)
        return True


def _has_query(arg: object) -> bool:
    return isinstance(arg, str) and "?" in arg


def _redact(arg: object) -> object:
    if isinstance(arg, str) and "?" in arg:
        return arg.partition("?")[0] + "?[redacted]"
    return arg


def install(error_log: logging.Logger) -> None:
    """Route the gateway's loggers to gunicorn's error log and redact every server log line."""
    gateway = logging.getLogger("gateway")
    gateway.handlers = error_log.handlers
    gateway.setLevel(error_log.level)
    gateway.propagate = False
    # websockets' per-socket "connection open" lines: only when debugging.
    logging.getLogger("gateway.protocol").setLevel(max(error_log.level, logging.WARNING))
    for name in ("gateway", "uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueryStrings) for f in logger.filters):
            logger.addFilter(RedactQueryStrings())
