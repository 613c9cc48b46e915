"""python -m gateway says which Redis it used when REDIS_URL is unset (its default), and a Redis
that does not answer is one line, not a traceback."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from gateway import cli, wire
from gateway.config import table
from harness.paths import ROOT
from harness.ports import free_port
from harness.redis_server import RedisServer


@pytest.fixture
def default_redis(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test's Redis as the default, and REDIS_URL unset: the machine's own Redis is not touched."""
    setting = dataclasses.replace(table.REDIS_URL, default=redis_server.url)
    monkeypatch.setattr(table, "REDIS_URL", setting)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return redis_server.url


def test_publish_without_redis_url_names_the_default_it_used(
    default_redis: str, redis_server: RedisServer, user: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with redis_server.client() as client, client.pubsub() as pubsub:
        pubsub.subscribe(f"ws:{user}")
        assert pubsub.get_message(timeout=5) is not None
        assert cli.main(["publish", user, '{"n": 1}']) == 0
        message = pubsub.get_message(timeout=5)
    assert message is not None
    published = wire.parse_history(message["data"])  # with history, as the CLI publishes by default
    assert published is not None and published.data == b'{"n": 1}'
    out, err = capsys.readouterr()
    assert err == f"REDIS_URL is unset: using {default_redis}\n"
    assert out == f"delivered to 1 gateway worker(s); position {published.offset}-{published.epoch}\n"


def test_connections_without_redis_url_names_the_default_it_used(
    default_redis: str, user: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["connections", user]) == 0
    out, err = capsys.readouterr()
    assert err == f"REDIS_URL is unset: using {default_redis}\n"
    assert out == f"0 live connection(s) for {user}\n"


def test_with_redis_url_set_nothing_is_said(
    redis_server: RedisServer, user: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert cli.main(["connections", user]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", [["publish", "alice", "{}"], ["connections", "alice"]])
def test_a_redis_that_does_not_answer_is_one_line(command: list[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *command],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": url},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and url in lines[0] and "does not answer" in lines[0], result.stderr


@pytest.mark.parametrize(
    "command",
    [["publish", "alice", "{}"], ["connections", "alice"], ["online", "alice"], ["disconnect", "alice"]],
)
def test_a_cluster_that_does_not_answer_is_one_line(command: list[str]) -> None:
    """A cluster client that reaches no node raises RedisClusterException, not a RedisError."""
    node = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "REDIS_CLUSTER_NODES": node}
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and f"cluster {node}" in lines[0] and "does not answer" in lines[0], result.stderr
