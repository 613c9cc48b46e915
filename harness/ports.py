"""Free loopback ports, so every server a test starts is its own."""

from __future__ import annotations

import socket
from pathlib import Path

# Ports this process has handed out (a cluster node's bus port too): the kernel may give a port
# back once its socket is closed, and two nodes of one cluster drawn before either starts could
# then share it (about 1 in 2,000 for a 6-node cluster).
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now and not handed out before by this process."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port that this process has not handed out")


def free_cluster_port() -> int:
    """A free port for a Redis Cluster node: at most 55535, with its bus port (+10000) free too and
    neither handed out before."""
    for _ in range(1000):
        port = free_port()
        bus = port + 10000
        if port <= 55535 and bus not in _handed_out and _is_free(bus):
            _handed_out.add(bus)
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def listening_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port``, as /proc/net writes them ("0100007F" is 127.0.0.1,
    "00000000" every IPv4 address); read from /proc, so no ss or netstat is needed."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found
