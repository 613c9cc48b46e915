"""Whether a Docker engine answers here, for the tests marked ``docker`` (they skip, with the reason,
when none does)."""

from __future__ import annotations

import os
import socket


def engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None. Only a local socket is probed."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return None  # tcp:// or ssh://: testcontainers finds out itself
    path = host.removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(3)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = s.recv(64)
    except OSError as exc:
        return f"no Docker engine reachable at {host}: {exc.strerror or exc}"
    if b" 200 " not in reply:
        return f"the Docker engine at {host} does not answer /_ping: {reply[:40]!r}"
    return None
