"""A name server that never answers, for one process tree: ``wrap(argv)`` runs the command in a
private mount namespace where /etc/resolv.conf names only a local UDP socket that reads nothing,
so every DNS lookup waits for glibc's timeouts (10 s per lookup). Needs root and ``unshare``;
``problem()`` says why it cannot be used here."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

# Not in /etc/hosts, and .invalid is never delegated: only the name server could answer it.
UNRESOLVABLE = "redis.gateway-test.invalid"

_MOUNT_AND_RUN = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'


def problem() -> str | None:
    """Why no private mount namespace can be made here, or None."""
    if os.geteuid() != 0:
        return "needs root, for unshare -m and a bind mount over /etc/resolv.conf"
    if shutil.which("unshare") is None:
        return "no unshare (util-linux)"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"unshare -m refused: {probe.stderr.strip()}"
    return None


class HungResolver:
    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Port 53 is fixed by resolv.conf: an address of 127/8 that nothing else uses.
        for _ in range(20):
            self.address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
            try:
                self._socket.bind((self.address, 53))
                break
            except OSError:
                continue
        else:
            raise OSError("no free 127/8 address for a name server on port 53")
        fd, path = tempfile.mkstemp(prefix="gateway-resolv-", suffix=".conf")
        self.resolv_conf = Path(path)
        with os.fdopen(fd, "w") as conf:
            conf.write(f"nameserver {self.address}\n")

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run where this name server is the only one (the same process: exec)."""
        return ["unshare", "-m", "sh", "-c", _MOUNT_AND_RUN, str(self.resolv_conf), *argv]

    def close(self) -> None:
        self._socket.close()
        self.resolv_conf.unlink(missing_ok=True)
