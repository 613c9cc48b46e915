"""redis-py's connects look host names up with a deadline (gateway/topology/name_lookup.py).

redis-py resolves in ``Connection._connect``: the sync one calls ``socket.getaddrinfo``, with no
deadline (gunicorn's master, releasing a dead worker's leases, waited 10 to 40 s per lookup), and
the async one hands the name to ``asyncio.open_connection``, which leaves the lookup queued on
libuv's threads after its connect timeout. ``install`` wraps both ``_connect`` methods of the
TCP connection class, which every redis-py connection of the gateway derives from (plain, TLS,
Sentinel-managed, cluster nodes): the name is looked up first, within the connection's connect
timeout, and redis-py connects to each address in turn, as it does with ``getaddrinfo``'s list.
A TLS connection still checks the certificate against the name. gunicorn.conf.py installs it in
the master, before the workers are forked.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import redis.asyncio.connection as async_connection
import redis.connection as sync_connection

from gateway.topology.name_lookup import lookup, lookup_async

# For a connection without a connect timeout (redis-py's default is none).
_DEFAULT_TIMEOUT = 5.0
_INSTALLED = "_gateway_bounded_lookup"


def install() -> None:
    """Wrap redis-py's connects (idempotent: a reload runs gunicorn.conf.py again)."""
    sync_class: Any = sync_connection.Connection
    async_class: Any = async_connection.Connection
    if getattr(sync_class, _INSTALLED, False):
        return
    sync_class._connect = _sync_connect(sync_class._connect)
    async_class._connect = _async_connect(async_class._connect)
    async_class._connection_arguments = _arguments(async_class._connection_arguments)
    setattr(sync_class, _INSTALLED, True)


def _timeout(connection: Any) -> float:
    return float(connection.socket_connect_timeout or _DEFAULT_TIMEOUT)


def _addresses(infos: Sequence[Any]) -> list[str]:
    """The distinct addresses, in getaddrinfo's order."""
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _sync_connect(connect: Callable[[Any], socket.socket]) -> Callable[[Any], socket.socket]:
    @functools.wraps(connect)
    def _connect(self: Any) -> socket.socket:
        name = self.host
        infos = lookup(name, self.port, family=self.socket_type, timeout=_timeout(self))
        error: OSError | None = None
        for address in _addresses(infos):
            # redis-py's own getaddrinfo call then finds a numeric address: no lookup. The TLS
            # subclass wraps the socket after this returns, with the name back in place.
            self.host = address
            try:
                return connect(self)
            except OSError as exc:
                error = exc
            finally:
                self.host = name
        raise error or OSError(f"no address for {name}")

    return _connect


def _async_connect(connect: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    @functools.wraps(connect)
    async def _connect(self: Any) -> None:
        infos = await lookup_async(self.host, self.port, timeout=_timeout(self))
        error: Exception | None = None
        for address in _addresses(infos):
            # Read by _connection_arguments below, while this connect runs.
            self._gateway_address = address
            try:
                return await connect(self)
            except (OSError, TimeoutError) as exc:
                error = exc
            finally:
                self._gateway_address = None
        raise error or OSError(f"no address for {self.host}")

    return _connect


def _arguments(arguments: Callable[[Any], Mapping[str, Any]]) -> Callable[[Any], Mapping[str, Any]]:
    @functools.wraps(arguments)
    def _connection_arguments(self: Any) -> Mapping[str, Any]:
        given = dict(arguments(self))
        address = getattr(self, "_gateway_address", None)
        if address is not None:
            given["host"] = address
            if given.get("ssl"):
                # The certificate names the host, not its address.
                given["server_hostname"] = self.host
        return given

    return _connection_arguments
