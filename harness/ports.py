"""Free loopback ports, so every server a test starts is its own."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port for a Redis Cluster node: at most 55535, with its bus port (+10000) free too."""
    for _ in range(1000):
        port = free_port()
        if port <= 55535 and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
