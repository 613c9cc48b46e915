"""A WebSocket gateway that pushes Redis pub/sub notifications to authenticated users.

``from gateway import Publisher`` (and ``AsyncPublisher``, ``Published``, ``NotReplicated``,
``PayloadTooLarge``, ``SettingsError``) loads only the publisher library (``publishing/``), never
the server: the names are looked up when first used. The distribution's core needs only redis
(the publisher and the CLI but ``token``); the server needs the ``[server]`` extra. Type hints
ship (``py.typed``).

The socket path, flat: ``app.py`` (the app and its lifespan), ``state.py`` (a worker's parts),
``redis_wiring.py`` (its command client and broker for the Redis topology), ``endpoint.py``
(admission's order), ``connection.py``, ``link.py``, ``clock.py`` (the time a connection is
handed), ``hub.py``, ``control.py`` (control commands on the worker), ``drops.py``, ``drain.py``,
``health.py``, ``ports.py`` and ``dev_console.py``. The contract: ``wire.py``, ``keys.py``,
``close_codes.py``, ``http_refusals.py``, ``client_messages.py`` (what a client may send),
``payload_limit.py`` and ``untrusted_json.py``. Helpers: ``tasks.py``. The entry points:
``cli.py`` and ``__main__.py`` (``python -m gateway``), with ``dev_env.py`` (what a running
``make run`` leaves for it).

The parts, one package each: ``admission/``, ``api/``, ``broker/``, ``config/``, ``history/``, ``leases/``,
``publishing/``, ``server/``, ``telemetry/``, ``topology/``. Data: ``lua/`` (the Redis scripts)
and ``static/`` (the dev console's page). docs/architecture.md is the map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.publishing.publisher import (
        AsyncPublisher,
        NotReplicated,
        PayloadTooLarge,
        Published,
        Publisher,
        SettingsError,
    )

__version__ = "0.1.0"
__all__ = ["AsyncPublisher", "NotReplicated", "PayloadTooLarge", "Published", "Publisher", "SettingsError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gateway.publishing import publisher

        return getattr(publisher, name)
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
