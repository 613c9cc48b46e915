"""The settings a running make run leaves for the CLI (gateway/dev_env.py): used only while that
run lives, never over the environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from gateway import dev_env


def _file(tmp_path: Path, pid: int, **values: str) -> Path:
    path = tmp_path / "dev.env"
    lines = [f"MAKE_RUN_PID={pid}", *(f"{name}={value}" for name, value in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _ended_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_live_runs_settings_fill_what_the_environment_lacks(tmp_path: Path) -> None:
    path = _file(tmp_path, os.getpid(), REDIS_URL="redis://127.0.0.1:7001", JWT_SECRET_KEY="a=b")
    environ = {"JWT_SECRET_KEY": "mine"}
    assert dev_env.apply(path, environ) == ["REDIS_URL"]
    assert environ == {"JWT_SECRET_KEY": "mine", "REDIS_URL": "redis://127.0.0.1:7001"}


def test_a_redis_chosen_in_the_environment_keeps_the_files_redis_out(tmp_path: Path) -> None:
    path = _file(tmp_path, os.getpid(), REDIS_URL="redis://127.0.0.1:7001", JWT_SECRET_KEY="s=1")
    environ = {"REDIS_CLUSTER_NODES": "127.0.0.1:7000"}
    assert dev_env.apply(path, environ) == ["JWT_SECRET_KEY"]
    assert environ == {"REDIS_CLUSTER_NODES": "127.0.0.1:7000", "JWT_SECRET_KEY": "s=1"}


def test_an_ended_runs_file_or_none_is_ignored(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    assert dev_env.apply(_file(tmp_path, _ended_pid(), REDIS_URL="redis://x"), environ) == []
    assert dev_env.apply(tmp_path / "missing", environ) == []
    assert environ == {}
