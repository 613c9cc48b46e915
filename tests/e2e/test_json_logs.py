"""LOG_FORMAT=json on a real gunicorn: every line of its output (gunicorn's master and workers,
uvicorn's error and access logs, the gateway's own) is one JSON object with the fields, and a
token in a refused request's URL is redacted as in text logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from harness.gateway_process import Gateway
from harness.paths import ROOT
from harness.redis_server import RedisServer
from harness.tokens import SECRET, make_token
from harness.waiting import eventually, in_thread

FIELDS = {"time", "level", "logger", "message", "worker", "pid"}


def parsed_lines(log: str) -> list[dict[str, Any]]:
    lines = []
    for number, line in enumerate(log.splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"line {number} is not JSON: {line!r}\n--- log ---\n{log[-4000:]}")
    return lines


async def test_every_line_is_json_with_the_fields_and_no_token(redis_server: RedisServer, user: str) -> None:
    # The access log on (stdout), so uvicorn's access lines are among them.
    gateway = Gateway(redis_server.url, 2, LOG_FORMAT="json", GUNICORN_CMD_ARGS="--access-logfile -")
    try:
        gateway.start()
        worker_ids = {state["worker"] for state in gateway.worker_states().values()}
        forged = make_token(user, secret="another-secret-of-enough-length-0123456789")
        with pytest.raises(InvalidStatus):
            await connect(f"{gateway.ws_url}?token={forged}")
        async with connect(f"{gateway.ws_url}?token={make_token(user)}"):
            pass
        # The gateway's own line: a payload over the limit is dropped and logged.
        with redis_server.client() as publisher:
            async with connect(f"{gateway.ws_url}?token={make_token(user)}"):
                publisher.publish(f"ws:{user}", b"x" * (65536 + 1))
                await eventually(
                    in_thread(lambda: "dropped a published payload of 65537 bytes" in gateway.log()),
                    timeout=10,
                    what="the gateway's line about the dropped payload",
                )
        assert gateway.stop(signal.SIGTERM) == 0
        log = gateway.log()
    finally:
        gateway.close()

    lines = parsed_lines(log)
    assert forged not in log and forged.split(".")[2] not in log
    for line in lines:
        assert FIELDS <= line.keys(), line
        assert line["time"].endswith("Z") and line["level"] in {
            "DEBUG",
            "INFO",
            "WARNING",
            "ERROR",
            "CRITICAL",
        }
    loggers = {line["logger"] for line in lines}
    assert {"gunicorn.error", "uvicorn.error", "uvicorn.access"} <= loggers, loggers
    assert any(name.startswith("gateway") for name in loggers), loggers
    refused = [line for line in lines if "/ws?" in line["message"] and " 401" in line["message"]]
    assert refused and all("/ws?[redacted]" in line["message"] for line in refused), refused
    master = [line for line in lines if line["worker"] is None]
    assert master and all(line["logger"] == "gunicorn.error" for line in master)
    from_workers = {line["worker"] for line in lines if line["worker"] is not None}
    assert worker_ids <= from_workers and from_workers <= worker_ids | {None}, (worker_ids, from_workers)
    assert all(line["pid"] != os.getpid() for line in lines)


def test_a_start_up_failure_is_one_json_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env={**os.environ, "JWT_SECRET_KEY": SECRET, "LOG_FORMAT": "json", "WEBSOCKET_PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    (line,) = parsed_lines(result.stderr)
    assert FIELDS <= line.keys()
    assert line["level"] == "CRITICAL" and line["message"].startswith("invalid setting WEBSOCKET_PORT:")


def test_an_unknown_log_format_stops_start_up_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env={**os.environ, "JWT_SECRET_KEY": SECRET, "LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == "gateway: invalid setting LOG_FORMAT: one of json, text, got 'xml'\n"
