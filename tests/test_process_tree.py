"""kill_tree reaches what a script started in a session of its own, which a process-group kill
misses; stop_then_kill stops a process politely, or not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from harness.process_tree import descendants, kill_tree, stop_then_kill
from harness.waiting import wait_for


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_setsid_server_of_a_script_is_found_and_killed() -> None:
    script = subprocess.Popen(["bash", "-c", "setsid sleep 300 & wait"], start_new_session=True)
    try:
        server = wait_for(lambda: descendants(script.pid), what="the script's server to start")[0]
        assert os.getsid(server) != os.getsid(script.pid)
        kill_tree(script.pid)
        script.wait(10)
        wait_for(lambda: not _alive(server), what="the detached server to die")
    finally:
        kill_tree(script.pid)


def _python(code: str) -> subprocess.Popen[str]:
    """A Python process that prints "ready" once ``code`` ran, then waits."""
    process = subprocess.Popen(
        [sys.executable, "-c", f"{code}\nimport time\nprint('ready', flush=True)\ntime.sleep(300)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


def test_a_process_that_stops_on_the_signal_is_not_killed() -> None:
    process = _python("import signal, sys\nsignal.signal(signal.SIGINT, lambda *_: sys.exit(3))")
    try:
        assert stop_then_kill(process, 30, signal.SIGINT) == 3
    finally:
        _reap(process)


def test_a_process_that_ignores_the_signal_is_killed_after_the_timeout() -> None:
    process = _python("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)")
    try:
        assert stop_then_kill(process, 0.5) == -signal.SIGKILL
        assert stop_then_kill(process, 0.5) == -signal.SIGKILL  # a process already gone: its status
    finally:
        _reap(process)


def _reap(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait()
    assert process.stdout is not None
    process.stdout.close()
