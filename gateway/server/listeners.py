"""Listening sockets: one per worker, with SO_REUSEPORT, so the kernel spreads connections.

With ``reuse_port`` on, gunicorn (24 and later) binds nothing in the master: each worker binds its
own socket after the fork, and the kernel hands every new connection to one of them by a hash of
its addresses and ports. With one shared accept queue the quickest worker takes most of a
reconnect storm, and a WebSocket never moves to another worker afterwards.

What that changes, and what this module does about it:
- The kernel lets any process of the same user join a SO_REUSEPORT group, so a second gateway
  started on the same port would silently take a share of the traffic. The master first binds the
  port once without SO_REUSEPORT (``port_in_use``), which fails while anything listens there.
- A worker that drains closes its own socket at once (gateway.server.worker), so the kernel sends it no
  new connection. Connections already queued in that socket's backlog and not yet accepted are
  reset by the kernel; with Linux 5.14+ ``sysctl net.ipv4.tcp_migrate_req=1`` moves them to
  another worker's socket instead.
- A reload (HUP) starts the new workers, which join the group, before the old ones stop: the port
  is never without a listener. (The address comes from the environment, which a reload keeps.)
- With a single worker, its restart leaves the port without a listener for a moment: connects are
  refused, and clients retry.
- The master has no socket to name, so gunicorn logs ``Listening at:  (pid)``: ``name_in_log``
  puts the addresses the workers bind there.
- uvloop closes a listening socket's descriptor itself, then calls ``close()`` on the object it
  was given: gunicorn's wrapper then logs ``Error while closing socket [Errno 9]`` at every stop.
  The worker hands uvicorn the sockets inside the wrappers (``plain_sockets``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any

# gunicorn's start-up and reload lines (gunicorn/arbiter.py), the address list first.
_LISTENING_AT = ("Listening at: %s (%s)", "Listening at: %s")


class _ListeningAt(logging.Filter):
    def __init__(self, addresses: str) -> None:
        super().__init__()
        self._addresses = addresses

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg in _LISTENING_AT and isinstance(args, tuple) and args and args[0] == "":
            record.args = (self._addresses, *args[1:])
        return True


def name_in_log(logger: logging.Logger, binds: Sequence[str]) -> None:
    """gunicorn's ``Listening at:`` line names ``binds`` (host:port), where the workers listen."""
    logger.addFilter(_ListeningAt(",".join(f"http://{bind}" for bind in binds)))


def plain_sockets(sockets: Sequence[Any]) -> list[socket.socket]:
    """The sockets inside gunicorn's wrappers (``.sock``), for uvicorn."""
    return [getattr(wrapper, "sock", wrapper) for wrapper in sockets]


def port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (another process listens there), or None."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            # As gunicorn binds: SO_REUSEADDR passes a port in TIME_WAIT, never one that listens.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None
