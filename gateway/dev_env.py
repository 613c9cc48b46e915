"""The settings a running ``make run`` leaves for the CLI: scripts/run-dev writes ``.run/dev.env``
(its Redis, its JWT secret) and removes it when it stops, so ``python -m gateway publish`` or
``token`` from another terminal in the repository reaches that run's Redis with its secret instead
of the default ``redis://localhost:6379``. The environment wins: a file value is used only for a
variable that is unset (the Redis ones as a group), and a file whose run has ended is ignored."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

DEV_ENV = Path(".run") / "dev.env"
# The variables that choose a Redis: one set in the environment keeps all of the file's out.
_REDIS = ("REDIS_URL", "REDIS_CLUSTER_NODES", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER")
_OWNER = "MAKE_RUN_PID"


def read(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (the value is everything after the first ``=``, unquoted)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    pairs = (line.partition("=") for line in text.splitlines())
    return {name: value for name, sep, value in pairs if sep and name.isidentifier()}


def apply(path: Path = DEV_ENV, environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Set the variables of a live run's file that ``environ`` lacks; the names it set."""
    values = read(path)
    owner = values.pop(_OWNER, "")
    if not owner.isdigit() or not _alive(int(owner)):
        return []
    if any(name in environ for name in _REDIS):
        values = {name: value for name, value in values.items() if name not in _REDIS}
    taken = [name for name in values if name not in environ]
    for name in taken:
        environ[name] = values[name]
    return taken


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
