"""LOG_FORMAT=json: every log line one JSON object (gunicorn's, uvicorn's and the gateway's).

gunicorn.conf.py names ``JsonLogger`` as gunicorn's logger class. Its handlers are the only ones:
the worker hands them to uvicorn's loggers and gateway/telemetry/logs.py to the gateway's, so one formatter
on them covers every line. The redaction filters of gateway/telemetry/logs.py run before any formatter.
Standard library and gunicorn only: the master imports it before prometheus_client may be.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from gunicorn.glogging import Logger

from gateway import keys


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, worker, pid."""

    def __init__(self) -> None:
        super().__init__()
        # The process that set logging up is the master; its forks are the workers.
        self._master_pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "worker": self._worker_id(record.process),
            "pid": record.process,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)

    def _worker_id(self, pid: int | None) -> str | None:
        # As gateway/app.py names a worker (x-gateway-worker, /healthz/websocket, CLIENT LIST).
        instance = os.environ.get("GATEWAY_INSTANCE_ID")
        if pid is None or pid == self._master_pid or instance is None:
            return None
        return keys.worker_id(instance, pid)


class JsonLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with every handler writing JSON."""

    def setup(self, cfg: object) -> None:
        super().setup(cfg)
        formatter = JsonFormatter()
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(formatter)


def fatal(message: str) -> None:
    """A start-up failure before logging is set up: one line on stderr, JSON when asked for."""
    if os.environ.get("LOG_FORMAT") == "json":
        record = logging.LogRecord("gateway", logging.CRITICAL, __file__, 0, message, None, None)
        sys.stderr.write(JsonFormatter().format(record) + "\n")
    else:
        sys.stderr.write(f"gateway: {message}\n")


def _iso_time(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"
