"""make run (scripts/run-dev) as a first-time user meets it: loopback only, the secret it uses, a
taken port, Ctrl-C; and the Makefile's stamps, so a second `make run` does not reinstall."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect

from harness.clients import admit
from harness.paths import ROOT
from harness.ports import free_port, listening_addresses
from harness.process_tree import kill_tree
from harness.redis_server import RedisServer
from harness.tokens import SECRET, make_token
from harness.waiting import wait_for

RUN_DEV = str(ROOT / "scripts" / "run-dev")


def environment(**extra: str) -> dict[str, str]:
    """The user's shell, without the settings run-dev chooses for them unless given."""
    chosen = {
        "REDIS_URL",
        "JWT_SECRET_KEY",
        "WEBSOCKET_HOST",
        "WEBSOCKET_PORT",
        "WEB_CONCURRENCY",
        "WEBSOCKET_DEV_CONSOLE",
        "WEBSOCKET_DEV_CONSOLE_PORT",
    }
    return {**{k: v for k, v in os.environ.items() if k not in chosen}, **extra}


@contextmanager
def run_dev(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """scripts/run-dev in a process group of its own, as a terminal runs it: killpg is Ctrl-C. As
    from a terminal, it starts with Ctrl-C's signals at their defaults: a suite started in the
    background (a CI runner's job, ``make test &``) ignores SIGINT and SIGQUIT, and a shell that
    starts with a signal ignored can never trap it."""
    output = Path(tempfile.mkstemp(prefix="run-dev-", suffix=".txt")[1])
    command = ["env", "--default-signal=INT,QUIT,HUP", RUN_DEV]
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process, output
    finally:
        if process.poll() is None:
            # Its Redis and gunicorn run in sessions of their own: a failed test must not leave
            # them serving (they would answer the next test's ports and channels).
            kill_tree(process.pid)
            process.wait(10)
        output.unlink(missing_ok=True)


def status(port: int, path: str) -> int | None:
    """The HTTP status of ``GET path`` on 127.0.0.1, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def answers(port: int) -> bool:
    return status(port, "/healthz") == 200


def shell(command: str) -> str:
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result.stdout


def ctrl_c(process: subprocess.Popen[bytes], output: Path) -> int:
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(40)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"make run did not stop 40 s after Ctrl-C:\n{output.read_text()[-4000:]}"
        ) from None


@pytest.mark.parametrize("variable", ["WEBSOCKET_PORT", "WEBSOCKET_DEV_CONSOLE_PORT"])
def test_a_taken_port_is_one_line_and_a_failure(variable: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"WEBSOCKET_PORT": str(free_port()), "WEBSOCKET_DEV_CONSOLE_PORT": str(free_port())}
        result = subprocess.run(
            [RUN_DEV],
            cwd=ROOT,
            env=environment(**{**ports, variable: str(port)}),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"make run: port {port} on 127.0.0.1 is taken (Address already in use): "
        f"stop what listens there, or set {variable}"
    ]


def test_a_bad_setting_is_one_line_and_a_failure() -> None:
    result = subprocess.run(
        [RUN_DEV],
        cwd=ROOT,
        env=environment(WEBSOCKET_PORT="65535"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [
        "make run: invalid setting WEBSOCKET_DEV_CONSOLE_PORT: WEBSOCKET_PORT + 1 is past 65535; set a port"
    ]


async def test_loopback_only_its_own_secret_and_a_quiet_ctrl_c(user: str) -> None:
    """No REDIS_URL: a private Redis; no JWT_SECRET_KEY: one it prints, which then works."""
    port, console_port = free_port(), free_port()
    env = environment(WEBSOCKET_PORT=str(port), WEBSOCKET_DEV_CONSOLE_PORT=str(console_port))
    with run_dev(env) as (process, output):
        wait_for(lambda: answers(port) or process.poll() is not None, timeout=60, what="make run to serve")
        text = output.read_text()
        assert process.poll() is None, text
        assert listening_addresses(port) == {"0100007F"}, "binds 127.0.0.1 only"
        assert listening_addresses(console_port) == {"0100007F"}
        secret = re.search(r"export JWT_SECRET_KEY=(\S+)", text)
        redis_pid = re.search(r"private redis-server at \S+ \(pid (\d+)\)", text)
        assert secret and redis_pid, text
        # The commands it prints work as printed, from the repository root, in a shell without
        # REDIS_URL or JWT_SECRET_KEY: the CLI takes them from the run's .run/dev.env.
        another = re.search(r"^Another user's token:  (.+)$", text, re.M)
        connect_url = re.search(r'^Connect:  \.venv/bin/python -m websockets "(\S+)"$', text, re.M)
        publish = re.search(r"^Publish:  (.+)$", text, re.M)
        console = re.search(r"^Dev console:  (http://\S+/dev) ", text, re.M)
        assert another and connect_url and publish and console, text
        assert console[1] == f"http://127.0.0.1:{console_port}/dev"
        with urllib.request.urlopen(console[1], timeout=5) as page:
            assert page.status == 200 and b"Gateway dev console" in page.read()
        assert status(port, "/dev") == 404  # the console is on its own port only
        bob = shell(another[1]).strip()
        assert jwt.decode(bob, secret[1], algorithms=["HS256"])["sub"] == "bob"
        alice = await connect(connect_url[1])
        shell(publish[1])
        assert await asyncio.wait_for(alice.recv(), 10) == '{"hello": "world"}'
        await alice.close()
        ws = await connect(f"ws://127.0.0.1:{port}/ws?token={make_token(user, secret=secret[1])}")
        await ws.send('{"type":"ping"}')
        assert await ws.recv() == '{"type":"pong"}'
        await ws.close()
        assert (ROOT / ".run" / "dev.env").stat().st_mode & 0o077 == 0, "it holds the secret"
        assert ctrl_c(process, output) == 0
        text = output.read_text()
    assert not (ROOT / ".run" / "dev.env").exists(), "a stopped run leaves no settings behind"
    noise = [line for line in text.splitlines() if re.search(r"\[(WARNING|ERROR|CRITICAL)\]|Traceback", line)]
    # The one warning make run gives: its console mints tokens for anyone (once per worker).
    console_on = [line for line in noise if "WEBSOCKET_DEV_CONSOLE is on" in line]
    assert len(console_on) == 2 and len(noise) == 2, text
    assert not os.path.exists(f"/proc/{redis_pid[1]}"), "the private redis-server is stopped"
    assert not answers(port)


async def test_the_secret_of_the_environment_is_used(redis_server: RedisServer, user: str) -> None:
    port = free_port()
    env = environment(
        WEBSOCKET_PORT=str(port),
        WEBSOCKET_DEV_CONSOLE_PORT=str(free_port()),
        JWT_SECRET_KEY=SECRET,
        REDIS_URL=redis_server.url,
    )
    with run_dev(env) as (process, output):
        wait_for(lambda: answers(port) or process.poll() is not None, timeout=60, what="make run to serve")
        text = output.read_text()
        assert "JWT_SECRET_KEY generated" not in text and "private redis-server" not in text
        token = re.search(r'user "alice" \(valid 24 h\):\n  (\S+)', text)
        assert token, text
        assert jwt.decode(token[1], SECRET, algorithms=["HS256"])["sub"] == "alice"
        ws = await admit(f"ws://127.0.0.1:{port}/ws", user)
        assert isinstance(ws, ClientConnection), ws
        await ws.close()
        assert ctrl_c(process, output) == 0


def make_dry_run(target: str, **variables: str) -> str:
    arguments = [f"{name}={value}" for name, value in variables.items()]
    result = subprocess.run(
        ["make", "-n", target, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout


@pytest.mark.parametrize(("target", "stamp"), [("run", "RUN_STAMP"), ("loadtest", "LOADTEST_STAMP")])
def test_make_installs_only_when_what_it_installs_from_changed(
    target: str, stamp: str, tmp_path: Path
) -> None:
    fresh = tmp_path / "stamp"
    fresh.touch()
    future = time.time() + 3600
    os.utime(fresh, (future, future))
    assert "scripts/bootstrap" not in make_dry_run(target, **{stamp: str(fresh)})
    assert "scripts/bootstrap" in make_dry_run(target, **{stamp: str(tmp_path / "missing")})
