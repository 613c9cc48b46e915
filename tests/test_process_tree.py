"""kill_tree reaches what a script started in a session of its own, which a process-group kill misses."""

from __future__ import annotations

import os
import subprocess

from harness.process_tree import descendants, kill_tree
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
