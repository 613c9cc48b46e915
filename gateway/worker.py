"""The gunicorn worker: uvicorn-worker's worker with the settings gunicorn does not pass through."""

from __future__ import annotations

from typing import Any

from uvicorn_worker import UvicornWorker

from gateway import logs
from gateway.settings import Settings

# Close frames to the whole worker must not wait on clients that stopped reading.
_SHUTDOWN_MARGIN = 2.0


class GatewayWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = Settings.from_environ()
        self.CONFIG_KWARGS = {
            "loop": "uvloop",
            "http": "httptools",
            "ws": "gateway.protocol:GatewayWebSocketProtocol",
            "lifespan": "on",
            "ws_max_size": settings.max_inbound_message_size,
            "ws_ping_interval": settings.ping_interval or None,
            "ws_ping_timeout": settings.ping_timeout,
            "ws_per_message_deflate": settings.per_message_deflate,
            "timeout_graceful_shutdown": int(settings.drain_window + _SHUTDOWN_MARGIN),
            "server_header": False,
        }
        super().__init__(*args, **kwargs)
        logs.install(self.log.error_log)
