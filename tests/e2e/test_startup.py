"""gunicorn -c gunicorn.conf.py refuses a bad environment, or a taken port, with one line naming the
variable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from harness.clients import admit
from harness.gateway_process import running_gateway
from harness.paths import ROOT
from harness.ports import free_port
from harness.redis_server import RedisServer
from harness.tokens import SECRET

GARBAGE_PEM = "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n"
# A P-256 public key: a valid key, of the wrong kind for RS256.
EC_PUBLIC_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2eIRKVZ0qFd0kLXAktQF/5KWHNQ+\n"
    "UVhilqmjLX0YfO3ix2XCD64Tp5eiw0epDWsFgd1MnfnvezoR9S9ik8OBCA==\n"
    "-----END PUBLIC KEY-----\n"
)


def refused_start_up(env: dict[str, str]) -> str:
    """Run gunicorn with ``env``; it must exit 2 with one line on stderr, which is returned."""
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
    return lines[0]


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
    assert refused_start_up(env).startswith(f"gateway: invalid setting {variable}:")


@pytest.mark.parametrize("keys", ["short-key", f"{'k' * 40},{'s' * 31}", f"{'k' * 40},,{'j' * 40}"])
def test_an_api_key_under_32_characters_stops_start_up_without_showing_it(keys: str) -> None:
    line = refused_start_up({"WEBSOCKET_API_KEYS": keys})
    assert line.startswith("gateway: invalid setting WEBSOCKET_API_KEYS: key ")
    assert all(key not in line for key in keys.split(",") if key)


def test_a_missing_upstream_internal_stops_start_up_with_one_line(tmp_path: Path) -> None:
    """uvicorn 0.50 to 0.52 had no pause_writing of their own, and slow-consumer protection then
    silently did nothing: gunicorn refuses to start on such a release instead."""
    (tmp_path / "sitecustomize.py").write_text(
        "from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol\n"
        "del WebSocketsSansIOProtocol.pause_writing\n"
    )
    line = refused_start_up({"WEBSOCKET_PORT": str(free_port()), "PYTHONPATH": str(tmp_path)})
    assert line.startswith("gateway: incompatible dependency: uvicorn ")
    assert "lacks WebSocketsSansIOProtocol.pause_writing" in line


async def test_a_second_gateway_on_a_taken_port_stops_instead_of_sharing_it(
    redis_server: RedisServer,
) -> None:
    """Workers bind with SO_REUSEPORT, which any process of the same user may join: a second
    gateway on the same port must stop with one line, not silently take a share of the clients."""
    with running_gateway(redis_server.url, workers=1) as first, tempfile.TemporaryDirectory() as metrics:
        second = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env={**first.env, "PROMETHEUS_MULTIPROC_DIR": metrics},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: a second gateway that runs is stopped whole
        )
        try:
            _, stderr = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)
            second.communicate()
            raise AssertionError("a second gateway started on a port the first one listens on") from None
        assert second.returncode == 2, stderr
        lines = [line for line in stderr.splitlines() if line.startswith("gateway:")]
        assert len(lines) == 1, stderr
        assert lines[0].startswith(f"gateway: WEBSOCKET_PORT {first.port} ")
        ws = await admit(first.ws_url, f"user-{uuid.uuid4().hex[:12]}")
        assert isinstance(ws, ClientConnection), ws
        await ws.close()


def test_the_log_names_where_it_listens_and_a_stop_closes_its_sockets_quietly(
    redis_server: RedisServer,
) -> None:
    """gunicorn's master binds nothing with SO_REUSEPORT: its "Listening at:" line would be empty.
    uvloop closes each worker's listening socket itself: gunicorn's wrapper must not close it again
    (``Error while closing socket [Errno 9]``, once per worker at every stop)."""
    with running_gateway(redis_server.url, workers=2) as gateway:
        gateway.wait_all_workers_ready()
        assert gateway.stop() == 0
        log = gateway.log()
    listening = [line for line in log.splitlines() if "Listening at:" in line]
    assert len(listening) == 1 and f"Listening at: http://127.0.0.1:{gateway.port} (" in listening[0], log
    assert "Error while closing socket" not in log, log


def test_two_gateways_of_one_user_do_not_share_a_control_socket(redis_server: RedisServer) -> None:
    """gunicorn's control socket sits at one path per user: each master would replace the one
    before it and delete it on stop. The gateway turns it off."""
    with tempfile.TemporaryDirectory() as runtime:
        env = {"XDG_RUNTIME_DIR": runtime}
        with (
            running_gateway(redis_server.url, workers=1, **env) as first,
            running_gateway(redis_server.url, workers=1, **env) as second,
        ):
            assert os.listdir(runtime) == []
            assert "Control socket" not in first.log() + second.log()


def test_start_up_deletes_only_the_metrics_files_of_a_previous_run(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A stale worker file must not count; anything else in a mistaken PROMETHEUS_MULTIPROC_DIR
    (a shared directory, /tmp) is left alone."""
    (tmp_path / "counter_12345.db").write_bytes(b"stale")
    (tmp_path / "someone-elses.txt").write_text("keep me")
    (tmp_path / "a-directory").mkdir()
    with running_gateway(redis_server.url, workers=1, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)):
        assert not (tmp_path / "counter_12345.db").exists()
        assert (tmp_path / "someone-elses.txt").read_text() == "keep me"
        assert (tmp_path / "a-directory").is_dir()
