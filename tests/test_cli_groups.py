"""python -m gateway publish --group, broadcast and token --group against a real Redis."""

from __future__ import annotations

import uuid

import jwt
import pytest

from gateway import cli, wire
from harness.redis_server import RedisServer
from harness.tokens import SECRET


@pytest.fixture
def env(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("JWT_SECRET_KEY", SECRET)
    monkeypatch.delenv("REDIS_CHANNEL_PREFIX", raising=False)


@pytest.mark.parametrize("broadcast", [False, True])
def test_publish_group_and_broadcast_go_to_their_channel_with_history(
    env: None, redis_server: RedisServer, capsys: pytest.CaptureFixture[str], broadcast: bool
) -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    channel = "ws:{*" if broadcast else f"ws:{{{team}"
    argv = ["broadcast", '{"n": 1}'] if broadcast else ["publish", "--group", team, '{"n": 1}']
    with redis_server.client() as client, client.pubsub() as pubsub:
        pubsub.subscribe(channel)
        assert pubsub.get_message(timeout=5) is not None
        assert cli.main(argv) == 0
        message = pubsub.get_message(timeout=5)
    assert message is not None
    published = wire.parse_history(message["data"])
    assert published is not None and published.data == b'{"n": 1}'
    out, _ = capsys.readouterr()
    assert out == f"delivered to 1 gateway worker(s); position {published.offset}-{published.epoch}\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["publish", "--group", "a b", "{}"],
        ["publish", "--group", "*", "{}"],
        ["publish", "--group", "{x", "{}"],
    ],
)
def test_a_bad_group_id_is_one_line_and_status_2(
    env: None, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("not published: group id")


@pytest.mark.parametrize(
    "argv",
    [
        ["publish", "--group", "team", "not json"],
        ["publish", "--group", "team", "user", "{}"],
        ["publish", "--group", "team"],
        ["publish", "user"],
        ["broadcast", "not json"],
    ],
)
def test_malformed_group_publishes_are_usage_errors(env: None, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2


def test_a_development_token_names_its_groups(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "alice", "--group", "team", "--group", "org"]) == 0
    token = capsys.readouterr().out.strip()
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["groups"] == ["team", "org"]
