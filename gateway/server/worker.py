"""The gunicorn worker: uvicorn-worker's worker with the settings gunicorn does not pass through,
the app built with the process's one ``Settings``, and a graceful drain before uvicorn's own
shutdown (the drain hook; the drain itself is ``gateway.drain``)."""

from __future__ import annotations

import gc
import queue
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from gateway.config.settings import Settings
from gateway.server.http import GatewayHttpProtocol
from gateway.server.listeners import plain_sockets
from gateway.telemetry import logs

# uvicorn's own shutdown after the drain: close frames to clients that stopped reading.
_SHUTDOWN_MARGIN = 2.0
_GC_FIRST_GENERATION = 10_000


class _DrainingServer(Server):
    """uvicorn's Server, draining WebSockets before it closes what is left (1001 going_away) at once."""

    def __init__(self, config: Config, before_shutdown: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._before_shutdown = before_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting while the drain runs. This closes the worker's own SO_REUSEPORT socket
        # (gateway/server/listeners.py), so the kernel sends new connections to the other workers.
        for server in self.servers:
            server.close()
        await self._before_shutdown()
        await super().shutdown(sockets)


def _tune_gc() -> None:
    """Every open socket is a few dozen long-lived objects, and CPython's cyclic collector walks
    them over and over while thousands of sockets open: about a sixth of the cost of accepting
    one. The first generation is collected less often (the gateway makes few reference cycles),
    and what exists at start-up (modules, the app) is frozen out of the collector."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_FIRST_GENERATION, *gc.get_threshold()[1:])


# The signals with which gunicorn's master stops a worker.
_STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def hold_early_stop(server: Any, worker: Any) -> None:
    """gunicorn's post_fork, in the new worker. From the fork until the worker sets its own
    handlers, a stop the master sends it (a SIGTERM right after the start, or during a reload)
    lands in the master's handler, inherited through the fork, and is lost: the worker would then
    serve on and the master wait its whole graceful timeout. Kept here; init_signals acts on it."""
    worker.early_stop = None

    def keep(signum: int, frame: object) -> None:
        worker.early_stop = signum

    for signum in _STOPS:
        signal.signal(signum, keep)
    while True:  # what the inherited handler queued before this hook ran
        try:
            signum = server.SIG_QUEUE.get_nowait()
        except queue.Empty:
            break
        if signum in _STOPS:
            worker.early_stop = signum


class GatewayWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
    """Use ``GatewayWorker.with_settings(settings)`` as gunicorn's ``worker_class``: the master
    builds every worker from that class, so a reload (HUP), which runs gunicorn.conf.py again,
    starts its new workers with the settings it read then."""

    settings: ClassVar[Settings]

    @classmethod
    def with_settings(cls, settings: Settings) -> type[GatewayWorker]:
        config_kwargs = {
            "loop": "uvloop",
            "http": GatewayHttpProtocol.with_timeout(settings.handshake_timeout),
            # A path: uvicorn imports the protocol in the worker, and the master stays free of
            # prometheus_client until gunicorn.conf.py has set its directory.
            "ws": "gateway.server.protocol:GatewayWebSocketProtocol",
            "lifespan": "on",
            "interface": "asgi3",
            "ws_max_size": settings.max_inbound_message_size,
            "ws_ping_interval": settings.ping_interval or None,
            "ws_ping_timeout": settings.ping_timeout,
            "ws_per_message_deflate": settings.per_message_deflate,
            "timeout_graceful_shutdown": int(_SHUTDOWN_MARGIN + 1),
            "server_header": False,
        }
        attributes = {"settings": settings, "CONFIG_KWARGS": config_kwargs, "__module__": cls.__module__}
        return type(cls.__name__, (cls,), attributes)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not hasattr(self, "settings"):
            raise TypeError("worker_class must be GatewayWorker.with_settings(settings) (gunicorn.conf.py)")
        super().__init__(*args, **kwargs)
        logs.install(self.log.error_log)

    def init_signals(self) -> None:
        super().init_signals()
        if getattr(self, "early_stop", None) is not None:
            # The master asked this worker to stop before it could hear: it has nothing to drain.
            self.log.info("worker %s stopped before it started serving", self.pid)
            sys.exit(0)

    def load_wsgi(self) -> None:
        # In the worker, after the fork, instead of gunicorn importing ``wsgi_app``: the app gets
        # this worker's settings. Imported here, so the master never imports the app.
        from gateway.app import create_app

        self.wsgi = create_app(self.settings)

    async def _drain(self) -> None:
        # Imported here, as the app is: the drain reaches the per-worker state, whose metrics
        # must not be imported by the master before its multiprocess directory is set.
        from gateway.drain import drain

        gateway = getattr(self.wsgi.state, "gateway", None)
        if gateway is not None:
            await drain(gateway, self.settings.drain_window)

    async def _serve(self) -> None:
        # As uvicorn-worker's _serve (0.4), with a Server that drains first.
        _tune_gc()
        self.config.app = self.wsgi
        server = _DrainingServer(self.config, self._drain)
        self._install_sigquit_handler()
        await server.serve(sockets=plain_sockets(self.sockets))
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
