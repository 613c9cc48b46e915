"""gunicorn -c gunicorn.conf.py refuses a bad environment with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, SECRET, RedisServer, free_port, running_gateway

GARBAGE_PEM = "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n"
# A P-256 public key: a valid key, of the wrong kind for RS256.
EC_PUBLIC_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2eIRKVZ0qFd0kLXAktQF/5KWHNQ+\n"
    "UVhilqmjLX0YfO3ix2XCD64Tp5eiw0epDWsFgd1MnfnvezoR9S9ik8OBCA==\n"
    "-----END PUBLIC KEY-----\n"
)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"WEBSOCKET_PORT": "eighty"}, "WEBSOCKET_PORT"),
        ({"JWT_ALGORITHM": "none"}, "JWT_ALGORITHM"),
        ({"JWT_SECRET_KEY": ""}, "JWT_SECRET_KEY"),
        ({"JWT_SECRET_KEY": "x"}, "JWT_SECRET_KEY"),
        ({"JWT_SECRET_KEY": GARBAGE_PEM, "JWT_ALGORITHM": "RS256"}, "JWT_SECRET_KEY"),
        ({"JWT_SECRET_KEY": EC_PUBLIC_PEM, "JWT_ALGORITHM": "RS256"}, "JWT_SECRET_KEY"),
    ],
)
def test_invalid_setting_stops_start_up_with_one_line(env: dict[str, str], variable: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env={**os.environ, "JWT_SECRET_KEY": SECRET, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gateway: invalid setting {variable}:")


def test_a_missing_upstream_internal_stops_start_up_with_one_line(tmp_path: Path) -> None:
    """uvicorn 0.50 to 0.52 had no pause_writing of their own, and slow-consumer protection then
    silently did nothing: gunicorn refuses to start on such a release instead."""
    (tmp_path / "sitecustomize.py").write_text(
        "from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol\n"
        "del WebSocketsSansIOProtocol.pause_writing\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env={
            **os.environ,
            "JWT_SECRET_KEY": SECRET,
            "WEBSOCKET_PORT": str(free_port()),
            "PYTHONPATH": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gateway: incompatible dependency: uvicorn ")
    assert "lacks WebSocketsSansIOProtocol.pause_writing" in lines[0]


def test_start_up_writes_nothing_in_home_and_logs_no_control_socket_error(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """gunicorn >= 25.1 opens a control socket in $XDG_RUNTIME_DIR or $HOME/.gunicorn. The image
    runs with a read-only root and no home, where that logged an ERROR at every start; on a shared
    machine every gunicorn took over the one ~/.gunicorn/gunicorn.ctl. Nothing uses it: it is off."""
    home = tmp_path / "home"
    with running_gateway(
        redis_server.url, workers=1, HOME=str(home), XDG_RUNTIME_DIR=str(tmp_path / "no-runtime-dir")
    ) as gateway:
        gateway.stop()  # waits for the control server to have started or failed
        log = gateway.log()
    assert "Listening at:" in log
    assert not home.exists()
    assert "[ERROR]" not in log, log
