"""How the processes run and report: metrics files, log format, the development console.

Rows of the one settings table (gateway/config/table.py), which orders them for docs/reference.md."""

from __future__ import annotations

from gateway.config.parsers import Setting, choice, flag, integer, optional_text

PROMETHEUS_MULTIPROC_DIR = Setting(
    "PROMETHEUS_MULTIPROC_DIR",
    None,
    None,
    optional_text("a directory"),
    "multiprocess metrics directory, emptied at start (gunicorn.conf.py makes one when unset)",
    shown="a fresh temporary directory",
)

LOG_FORMAT = Setting(
    "LOG_FORMAT",
    None,
    "text",
    choice({"text", "json"}),
    "`json`: every log line (gunicorn's, uvicorn's, the gateway's) one JSON object with `time`, "
    "`level`, `logger`, `message`, `worker` and `pid` (read by gunicorn.conf.py)",
)

WEBSOCKET_DEV_CONSOLE = Setting(
    "WEBSOCKET_DEV_CONSOLE",
    "dev_console",
    False,
    flag(),
    "development only (`make run` sets it): `/dev`, a page that connects with the JS client, mints"
    " tokens for any user and publishes to them, on `WEBSOCKET_DEV_CONSOLE_PORT` only; never in"
    " production",
)

WEBSOCKET_DEV_CONSOLE_PORT = Setting(
    "WEBSOCKET_DEV_CONSOLE_PORT",
    "dev_console_port",
    0,
    integer(0, 65535),
    "with `WEBSOCKET_DEV_CONSOLE` only: the console's own listener, always on 127.0.0.1 (whatever"
    " `WEBSOCKET_HOST` says), serving `/dev` and its files and `/ws` for its page; `/dev` is 404 on"
    " every other port",
    shown="`0`: `WEBSOCKET_PORT` + 1",
)
