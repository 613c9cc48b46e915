"""The publisher library and the CLI, against a real redis-server."""

from __future__ import annotations

import os
import subprocess
import sys

import jwt
import pytest
import redis

from gateway import wire
from gateway.payload_limit import DEFAULT_MAX_PAYLOAD_SIZE, PayloadTooLarge
from gateway.publishing.publisher import AsyncPublisher, Publisher, SettingsError, encode_payload
from harness.paths import ROOT
from harness.redis_server import RedisServer
from harness.tokens import SECRET


def test_payload_encoding() -> None:
    """str and bytes go as they are; other values as compact JSON; bytes must be UTF-8."""
    assert encode_payload("héllo") == "héllo".encode()
    assert encode_payload(b'{"a":1}') == b'{"a":1}'
    assert encode_payload({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    with pytest.raises(UnicodeDecodeError):
        encode_payload(b"\xff")


def _listen(server: RedisServer, channel: str) -> redis.client.PubSub:
    pubsub = server.client().pubsub()
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    return pubsub


def test_sync_publisher_publishes_to_the_user_channel(redis_server: RedisServer, user: str) -> None:
    pubsub = _listen(redis_server, f"ws:{user}")
    publisher = Publisher(redis_server.url, history=False)
    assert publisher.publish(user, {"hello": "world"}) == 1
    assert pubsub.get_message(timeout=5)["data"] == b'{"hello":"world"}'  # type: ignore[index]
    publisher.close()
    pubsub.close()


async def test_async_publisher_honours_the_prefix(redis_server: RedisServer, user: str) -> None:
    pubsub = _listen(redis_server, f"notify:{user}")
    publisher = AsyncPublisher(redis_server.url, prefix="notify", history=False)
    assert await publisher.publish(user, "plain text") == 1
    assert pubsub.get_message(timeout=5)["data"] == b"plain text"  # type: ignore[index]
    await publisher.aclose()
    pubsub.close()


def test_publish_many_sends_in_order_and_counts_each(redis_server: RedisServer, user: str) -> None:
    pubsub = _listen(redis_server, f"ws:{user}")
    publisher = Publisher(redis_server.url, history=False)
    counts = publisher.publish_many([(user, "one"), ("nobody-listens", "lost"), (user, {"n": 2})])
    assert counts == [1, 0, 1]
    received = [pubsub.get_message(timeout=5)["data"] for _ in range(2)]  # type: ignore[index]
    assert received == [b"one", b'{"n":2}']
    publisher.close()
    pubsub.close()


async def test_async_publish_many_sends_nothing_when_one_message_is_bad(
    redis_server: RedisServer, user: str
) -> None:
    pubsub = _listen(redis_server, f"ws:{user}")
    publisher = AsyncPublisher(redis_server.url, history=False)
    with pytest.raises(UnicodeDecodeError):
        await publisher.publish_many([(user, "fine"), (user, b"\xff")])
    assert await publisher.publish_many([(user, "after")]) == [1]
    assert pubsub.get_message(timeout=5)["data"] == b"after"  # type: ignore[index]
    await publisher.aclose()
    pubsub.close()


@pytest.mark.parametrize("bad", ["two words", "a{b}", "}x"])
@pytest.mark.parametrize("history", [True, False])
def test_publisher_refuses_an_unusable_user_id(redis_server: RedisServer, bad: str, history: bool) -> None:
    """A brace would move the user's keys to another Redis Cluster slot than its channel."""
    publisher = Publisher(redis_server.url, history=history)
    with pytest.raises(ValueError):
        publisher.publish(bad, "x")
    publisher.close()


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_cli_publish_sends_the_json_byte_for_byte(redis_server: RedisServer, user: str) -> None:
    pubsub = _listen(redis_server, f"ws:{user}")
    result = _cli("publish", user, '{"a": 1}', REDIS_URL=redis_server.url)
    assert result.returncode == 0, result.stderr
    assert "delivered to 1" in result.stdout
    message = wire.parse_history(pubsub.get_message(timeout=5)["data"])  # type: ignore[index]
    assert message is not None and message.data == b'{"a": 1}'
    assert f"position {message.offset}-{message.epoch}" in result.stdout
    assert _cli("publish", user, "{not json", REDIS_URL=redis_server.url).returncode != 0
    pubsub.close()


def test_cli_token_mints_a_token_the_gateway_accepts(user: str) -> None:
    result = _cli("token", user, "--ttl", "60", JWT_SECRET_KEY=SECRET)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == user
    assert 0 < claims["exp"] - claims["iat"] <= 60


def test_cli_token_without_a_secret_says_so() -> None:
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "x"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "invalid setting JWT_SECRET_KEY: required (an HS* secret, or a PEM public key for RS*/ES*)"
    ]


def test_publisher_refuses_a_payload_over_the_limit_and_sends_nothing(
    redis_server: RedisServer, user: str
) -> None:
    """A payload over the limit raises before anything reaches Redis; one at the limit goes."""
    pubsub = _listen(redis_server, f"ws:{user}")
    publisher = Publisher(redis_server.url, max_payload_size=1024, history=False)
    with pytest.raises(PayloadTooLarge, match=r"1025 bytes.*WEBSOCKET_MAX_PAYLOAD_SIZE \(1024 bytes\)"):
        publisher.publish(user, "x" * 1025)
    with pytest.raises(PayloadTooLarge):
        publisher.publish_many([(user, "fine"), (user, "y" * 1025)])
    assert publisher.publish(user, "z" * 1024) == 1
    assert pubsub.get_message(timeout=5)["data"] == b"z" * 1024  # type: ignore[index]
    publisher.close()
    pubsub.close()


async def test_async_publisher_refuses_a_payload_over_the_limit(redis_server: RedisServer, user: str) -> None:
    pubsub = _listen(redis_server, f"ws:{user}")
    publisher = AsyncPublisher(redis_server.url, max_payload_size=100, history=False)
    with pytest.raises(PayloadTooLarge):
        await publisher.publish(user, {"text": "x" * 100})
    with pytest.raises(PayloadTooLarge):
        await publisher.publish_many([(user, "fine"), (user, "y" * 101)])
    assert await publisher.publish_many([(user, "after")]) == [1]
    assert pubsub.get_message(timeout=5)["data"] == b"after"  # type: ignore[index]
    await publisher.aclose()
    pubsub.close()


def test_publisher_takes_its_limit_from_the_environment(
    redis_server: RedisServer, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WEBSOCKET_MAX_PAYLOAD_SIZE, the gateway's own setting, else the documented default."""
    monkeypatch.delenv("WEBSOCKET_MAX_PAYLOAD_SIZE", raising=False)
    publisher = Publisher(redis_server.url, history=False)
    with pytest.raises(PayloadTooLarge):
        publisher.publish(user, "x" * (DEFAULT_MAX_PAYLOAD_SIZE + 1))
    assert publisher.publish(user, "x" * DEFAULT_MAX_PAYLOAD_SIZE) == 0
    publisher.close()
    monkeypatch.setenv("WEBSOCKET_MAX_PAYLOAD_SIZE", "200")
    publisher = Publisher(redis_server.url, history=False)
    with pytest.raises(PayloadTooLarge):
        publisher.publish(user, "x" * 201)
    publisher.close()
    monkeypatch.setenv("WEBSOCKET_MAX_PAYLOAD_SIZE", "lots")
    with pytest.raises(ValueError, match=r"^WEBSOCKET_MAX_PAYLOAD_SIZE: an integer"):
        Publisher(redis_server.url)


def test_cli_publish_refuses_a_payload_over_the_limit_with_one_line(
    redis_server: RedisServer, user: str
) -> None:
    pubsub = _listen(redis_server, f"ws:{user}")
    payload = '{"text": "' + "x" * 300 + '"}'
    result = _cli("publish", user, payload, REDIS_URL=redis_server.url, WEBSOCKET_MAX_PAYLOAD_SIZE="256")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "WEBSOCKET_MAX_PAYLOAD_SIZE (256 bytes)" in lines[0]
    assert pubsub.get_message(timeout=0.5) is None
    pubsub.close()


def test_publisher_without_arguments_reads_the_gateways_redis_and_prefix(
    redis_server: RedisServer, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service started with the gateway's environment reaches the gateway's channels."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("REDIS_CHANNEL_PREFIX", "notify")
    pubsub = _listen(redis_server, f"notify:{user}")
    publisher = Publisher()
    assert publisher.publish(user, "hi") == 1
    message = wire.parse_history(pubsub.get_message(timeout=5)["data"])  # type: ignore[index]
    assert message is not None and message.data == b"hi"
    publisher.close()
    pubsub.close()


async def test_async_publisher_without_arguments_reads_the_gateways_redis_and_prefix(
    redis_server: RedisServer, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("REDIS_CHANNEL_PREFIX", "notify")
    pubsub = _listen(redis_server, f"notify:{user}")
    publisher = AsyncPublisher()
    assert await publisher.publish(user, "hi") == 1
    message = wire.parse_history(pubsub.get_message(timeout=5)["data"])  # type: ignore[index]
    assert message is not None and message.data == b"hi"
    await publisher.aclose()
    pubsub.close()


@pytest.mark.parametrize("publisher_class", [Publisher, AsyncPublisher])
def test_publisher_refuses_what_the_gateway_refuses(
    publisher_class: type[Publisher] | type[AsyncPublisher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefix or URL the gateway would not start with names its variable, before any publish."""
    monkeypatch.setenv("REDIS_CHANNEL_PREFIX", "a:b")
    with pytest.raises(SettingsError, match=r"^REDIS_CHANNEL_PREFIX: a non-empty name"):
        publisher_class()
    monkeypatch.setenv("REDIS_CHANNEL_PREFIX", "ws")
    monkeypatch.setenv("REDIS_URL", "localhost:6379")
    with pytest.raises(SettingsError, match=r"^REDIS_URL: a redis://, rediss:// or unix:// URL"):
        publisher_class()


@pytest.mark.parametrize(
    ("command", "env", "line"),
    [
        (
            "publish",
            {"REDIS_CHANNEL_PREFIX": "a:b"},
            "invalid setting REDIS_CHANNEL_PREFIX: a non-empty name",
        ),
        ("publish", {"REDIS_URL": "localhost:6379"}, "invalid setting REDIS_URL: a redis://"),
        (
            "connections",
            {"REDIS_CHANNEL_PREFIX": ""},
            "invalid setting REDIS_CHANNEL_PREFIX: a non-empty name",
        ),
        ("connections", {"REDIS_URL": "localhost:6379"}, "invalid setting REDIS_URL: a redis://"),
    ],
)
def test_cli_refuses_a_setting_the_gateway_refuses_with_one_line(
    redis_server: RedisServer, user: str, command: str, env: dict[str, str], line: str
) -> None:
    """Not a publish to a channel no gateway listens on, nor a traceback."""
    pubsub = redis_server.client().pubsub()
    pubsub.psubscribe("*")
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"  # type: ignore[index]
    args = (command, user, "{}") if command == "publish" else (command, user)
    result = _cli(*args, **{"REDIS_URL": redis_server.url, **env})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(line)
    assert pubsub.get_message(timeout=0.5) is None
    pubsub.close()


def test_cli_publish_reads_the_prefix_as_the_gateway_does(redis_server: RedisServer, user: str) -> None:
    pubsub = _listen(redis_server, f"notify:{user}")
    result = _cli(
        "publish", "--no-history", user, "{}", REDIS_URL=redis_server.url, REDIS_CHANNEL_PREFIX="notify"
    )
    assert result.returncode == 0, result.stderr
    assert pubsub.get_message(timeout=5)["data"] == b"{}"  # type: ignore[index]
    pubsub.close()


@pytest.mark.parametrize(
    "statement", ["import gateway.publishing.publisher", "from gateway import Publisher, AsyncPublisher"]
)
def test_the_publisher_imports_nothing_heavy(statement: str) -> None:
    """Backend services import it: no jwt, cryptography keys, web server, metrics or the gateway's
    settings, whether from its module or from the package's re-exports."""
    probe = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
    )
    heavy = {"jwt", "starlette", "uvicorn", "gunicorn", "prometheus_client", "gateway.admission.auth"}
    heavy |= {"gateway.config.settings", "gateway.config.jwt_keys", "gateway.app", "gateway.hub"}
    assert "gateway.publishing.publisher" in loaded
    assert not heavy & loaded
    assert not {m for m in loaded if m.startswith("cryptography.hazmat")}


def test_the_package_re_exports_the_public_names() -> None:
    import gateway
    from gateway.publishing import publisher

    for name in gateway.__all__:
        assert getattr(gateway, name) is getattr(publisher, name)
    with pytest.raises(AttributeError):
        _ = gateway.Server  # type: ignore[attr-defined]


def test_a_named_redis_wins_over_the_topology_variables(
    redis_server: RedisServer, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Publisher(url)`` publishes to that Redis even where the environment names a cluster."""
    monkeypatch.setenv("REDIS_CLUSTER_NODES", "127.0.0.1:1")
    pubsub = _listen(redis_server, f"ws:{user}")
    publisher = Publisher(redis_server.url, history=False)
    assert publisher.publish(user, "here") == 1
    publisher.close()
    pubsub.close()


def test_a_sentinel_set_without_a_master_name_is_refused() -> None:
    with pytest.raises(SettingsError, match="REDIS_SENTINEL_MASTER"):
        Publisher(sentinels="127.0.0.1:26379")
    with pytest.raises(SettingsError, match="REDIS_CLUSTER_NODES"):
        Publisher(cluster_nodes="not a node list")
