"""The processes a test started: stopped politely with a deadline, or killed with everything they
started, however they detached (a script's servers may run in sessions of their own, setsid,
which a kill of the script's process group does not reach)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

# How long a process has to go once SIGKILLed (it cannot refuse): only the kernel's reaping.
_KILLED_WITHIN = 10.0


def stop_then_kill(process: subprocess.Popen[Any], timeout: float, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` to ``process`` if it runs, SIGKILL it when it has not exited ``timeout``
    seconds later, and reap it; its exit status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_KILLED_WITHIN)
    return process.returncode


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, children first, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name may hold spaces and parentheses: the fields follow the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        below = children.get(pending.pop(), [])
        found += below
        pending += below
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and everything below it (collected first: orphans move to init)."""
    for each in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
