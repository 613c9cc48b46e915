"""Settings come from the environment, once, and a bad value names its variable."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from gateway.config import table
from gateway.config.cpus import usable_cpus
from gateway.config.settings import Settings, SettingsError
from gateway.topology.modes import Topology

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"

# 64 bytes: long enough for every HS* algorithm.
BASE = {"JWT_SECRET_KEY": "s" * 64}


def test_defaults_follow_the_contract() -> None:
    """Unset variables take the documented defaults."""
    s = Settings.from_environ(BASE)
    assert (s.host, s.port) == ("0.0.0.0", 8080)
    assert s.max_connections_per_user == 5
    assert s.idle_timeout == 300
    assert s.redis_url == "redis://localhost:6379"
    assert s.channel_prefix == "ws"
    assert s.jwt_algorithm == "HS256"
    assert s.cors_origins == ()
    assert s.per_message_deflate is False


def test_values_are_read() -> None:
    """Every documented variable is actually read."""
    s = Settings.from_environ(
        {
            **BASE,
            "WEBSOCKET_HOST": "127.0.0.1",
            "WEBSOCKET_PORT": "9000",
            "WEB_CONCURRENCY": "3",
            "WEBSOCKET_MAX_CONNECTIONS_PER_USER": "2",
            "WEBSOCKET_IDLE_TIMEOUT": "30",
            "REDIS_URL": "redis://redis:6380/1",
            "REDIS_CHANNEL_PREFIX": "notify",
            "JWT_ALGORITHM": "HS512",
            "CORS_ORIGINS": '["https://a.example", "https://b.example"]',
            "WEBSOCKET_PER_MESSAGE_DEFLATE": "true",
        }
    )
    assert (s.host, s.port, s.web_concurrency) == ("127.0.0.1", 9000, 3)
    assert (s.max_connections_per_user, s.idle_timeout) == (2, 30)
    assert (s.redis_url, s.channel_prefix, s.jwt_algorithm) == ("redis://redis:6380/1", "notify", "HS512")
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.per_message_deflate is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBSOCKET_PORT", "http"),
        ("WEBSOCKET_PORT", "70000"),
        ("WEB_CONCURRENCY", "0"),
        ("WEBSOCKET_MAX_CONNECTIONS_PER_USER", "-1"),
        ("WEBSOCKET_IDLE_TIMEOUT", "soon"),
        ("REDIS_URL", "localhost:6379"),
        ("REDIS_CHANNEL_PREFIX", "a:b"),
        ("JWT_ALGORITHM", "none"),
        ("JWT_ALGORITHM", "HS1"),
        ("CORS_ORIGINS", "https://a.example"),
        ("CORS_ORIGINS", '[""]'),
        ("WEBSOCKET_PER_MESSAGE_DEFLATE", "maybe"),
    ],
)
def test_an_invalid_value_names_its_variable(name: str, value: str) -> None:
    """The error message starts with the variable's name."""
    with pytest.raises(SettingsError) as error:
        Settings.from_environ({**BASE, name: value})
    assert str(error.value).startswith(f"{name}:")


def test_the_secret_has_no_default() -> None:
    """Without JWT_SECRET_KEY the gateway does not start."""
    with pytest.raises(SettingsError, match=r"^JWT_SECRET_KEY: required"):
        Settings.from_environ({})


def test_a_public_key_cannot_be_an_hmac_secret() -> None:
    """HS* with a PEM key is the algorithm-confusion setup: refused at start-up."""
    pem = "-----BEGIN PUBLIC KEY-----\nMIIB...\n-----END PUBLIC KEY-----\n"
    with pytest.raises(SettingsError, match=r"^JWT_SECRET_KEY:"):
        Settings.from_environ({"JWT_SECRET_KEY": pem, "JWT_ALGORITHM": "HS256"})
    with pytest.raises(SettingsError, match=r"^JWT_SECRET_KEY:"):
        Settings.from_environ({"JWT_SECRET_KEY": "plain", "JWT_ALGORITHM": "RS256"})


def test_the_payload_limit_has_a_documented_default_and_bounds() -> None:
    """64 KiB unless set; a limit outside 64 bytes to 16 MiB names its variable."""
    assert Settings.from_environ(BASE).max_payload_size == 65536
    assert Settings.from_environ({**BASE, "WEBSOCKET_MAX_PAYLOAD_SIZE": "1024"}).max_payload_size == 1024
    for value in ("0", "huge", str(16 * 1024 * 1024 + 1)):
        with pytest.raises(SettingsError, match=r"^WEBSOCKET_MAX_PAYLOAD_SIZE: an integer from 64 to"):
            Settings.from_environ({**BASE, "WEBSOCKET_MAX_PAYLOAD_SIZE": value})


def _public_pem(private: object) -> str:
    public = private.public_key()  # type: ignore[attr-defined]
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return str(pem.decode())


def _private_pem(private: object) -> str:
    return str(
        private.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    )


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "rsa": _public_pem(rsa_key),
        "rsa private": _private_pem(rsa_key),
        "rsa 1024": _public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
        "p256": _public_pem(ec.generate_private_key(ec.SECP256R1())),
        "p384": _public_pem(ec.generate_private_key(ec.SECP384R1())),
        "p521": _public_pem(ec.generate_private_key(ec.SECP521R1())),
        "ed25519": _public_pem(ed25519.Ed25519PrivateKey.generate()),
        "ed448": _public_pem(ed448.Ed448PrivateKey.generate()),
        "garbage": "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
    }


@pytest.mark.parametrize(
    ("algorithm", "key"),
    [
        ("RS256", "rsa"),
        ("RS512", "rsa"),
        ("PS384", "rsa"),
        ("ES256", "p256"),
        ("ES384", "p384"),
        ("ES512", "p521"),
        ("EdDSA", "ed25519"),
        ("EdDSA", "ed448"),
    ],
)
def test_a_public_key_of_the_right_kind_is_accepted(keys: dict[str, str], algorithm: str, key: str) -> None:
    settings = Settings.from_environ({"JWT_SECRET_KEY": keys[key], "JWT_ALGORITHM": algorithm})
    assert settings.jwt_algorithm == algorithm


@pytest.mark.parametrize(
    ("algorithm", "key", "complaint"),
    [
        ("RS256", "garbage", "RS256 needs an RSA public key in PEM, and this is not a key it can read"),
        ("RS256", "p256", "RS256 needs an RSA public key in PEM, not an EC key"),
        ("PS256", "ed25519", "PS256 needs an RSA public key in PEM, not an Ed25519 key"),
        ("ES256", "rsa", "ES256 needs an EC public key on curve P-256 in PEM, not an RSA key"),
        ("ES256", "p384", "ES256 needs an EC public key on curve P-256 in PEM, not one on secp384r1"),
        ("ES512", "p256", "ES512 needs an EC public key on curve P-521 in PEM, not one on secp256r1"),
        ("EdDSA", "p256", "EdDSA needs an Ed25519 or Ed448 public key in PEM, not an EC key"),
        ("RS256", "rsa private", "RS256 needs the public key, not the private key"),
        ("RS256", "rsa 1024", "RS256 needs an RSA key of at least 2048 bits, got 1024"),
    ],
)
def test_a_key_that_cannot_verify_the_algorithm_stops_start_up(
    keys: dict[str, str], algorithm: str, key: str, complaint: str
) -> None:
    """Otherwise the gateway starts and answers every client 401, "do not reconnect"."""
    with pytest.raises(SettingsError) as error:
        Settings.from_environ({"JWT_SECRET_KEY": keys[key], "JWT_ALGORITHM": algorithm})
    message = str(error.value)
    assert message.startswith("JWT_SECRET_KEY: ")
    assert complaint in message
    assert "\n" not in message and "MII" not in message  # one line, and no key material


@pytest.mark.parametrize(("algorithm", "shortest"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_an_hmac_secret_shorter_than_its_hash_stops_start_up(algorithm: str, shortest: int) -> None:
    """RFC 7518 3.2: an HS* secret has at least as many bytes as the hash's output."""
    for secret in ("Q", "é" * ((shortest - 1) // 2), "Q" * (shortest - 1)):
        with pytest.raises(SettingsError) as error:
            Settings.from_environ({"JWT_SECRET_KEY": secret, "JWT_ALGORITHM": algorithm})
        message = str(error.value)
        assert message.startswith(f"JWT_SECRET_KEY: {algorithm} needs a secret of at least {shortest} bytes")
        assert secret not in message
    settings = Settings.from_environ({"JWT_SECRET_KEY": "x" * shortest, "JWT_ALGORITHM": algorithm})
    assert settings.jwt_algorithm == algorithm


def test_the_removed_fail_open_setting_stops_start_up() -> None:
    """WEBSOCKET_LIMIT_FAIL_OPEN=true promised admission while Redis is down, which the gateway
    cannot give (no subscription, no limit): an operator relying on it learns at start-up."""
    with pytest.raises(SettingsError, match=r"^WEBSOCKET_LIMIT_FAIL_OPEN: "):
        Settings.from_environ({**BASE, "WEBSOCKET_LIMIT_FAIL_OPEN": "true"})
    assert Settings.from_environ({**BASE, "WEBSOCKET_LIMIT_FAIL_OPEN": "false"})


def test_the_reference_carries_exactly_the_generated_settings_table() -> None:
    """docs/reference.md's table is table.markdown_table(), no row more or less."""
    generated = table.markdown_table().splitlines()
    lines = REFERENCE.read_text().splitlines()
    start = lines.index(generated[0])
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    assert lines[start:end] == generated


def test_every_settings_field_is_one_row_of_the_table() -> None:
    """The dataclass and the table name the same fields, each variable once."""
    variables = [s.variable for s in table.ALL]
    assert len(variables) == len(set(variables))
    fields = [str(s.field) for s in table.GATEWAY]
    assert sorted(fields) == sorted(f.name for f in dataclasses.fields(Settings))


def test_unset_variables_take_the_defaults_of_the_table() -> None:
    """WEB_CONCURRENCY's default is worked out: the CPUs the process may use."""
    settings = Settings.from_environ(BASE)
    for row in table.GATEWAY:
        if row is not table.JWT_SECRET_KEY:
            assert getattr(settings, str(row.field)) == row.default_value(), row.variable
    assert settings.web_concurrency == usable_cpus()


def test_the_documented_bounds_are_the_enforced_ones() -> None:
    """Each number's accepted range in docs/reference.md is exactly what start-up takes."""
    checked = 0
    for row in table.GATEWAY:
        bounds = re.fullmatch(r"(integer|number|bytes), ([\d.]+) to ([\d.]+)", row.parser.accepts)
        if bounds is None:
            continue
        kind = float if bounds[1] == "number" else int
        low, high = kind(bounds[2]), kind(bounds[3])
        step = 1 if kind is int else 0.01
        for inside in (low, high):
            value = Settings.from_environ({**BASE, row.variable: str(inside)})
            assert getattr(value, str(row.field)) == inside, row.variable
        for outside in (low - step, high + step):
            with pytest.raises(SettingsError, match=rf"^{row.variable}: an? (integer|number) from "):
                Settings.from_environ({**BASE, row.variable: str(outside)})
        checked += 1
    assert checked >= 15


def test_the_redis_topology_is_one_of_single_cluster_or_sentinel() -> None:
    base = {"JWT_SECRET_KEY": "k" * 64}
    assert Topology.of(Settings.from_environ(base)).mode == "single"
    cluster = Settings.from_environ({**base, "REDIS_CLUSTER_NODES": "10.0.0.1:7000, [::1]:7001"})
    assert cluster.redis_cluster_nodes == (("10.0.0.1", 7000), ("::1", 7001))
    assert Topology.of(cluster).mode == "cluster"
    sentinel = {**base, "REDIS_SENTINELS": "s1:26379,s2:26379", "REDIS_SENTINEL_MASTER": "main"}
    assert Topology.of(Settings.from_environ(sentinel)).mode == "sentinel"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_CLUSTER_NODES": "a:1", "REDIS_SENTINELS": "b:2", "REDIS_SENTINEL_MASTER": "m"}, "not both"),
        ({"REDIS_SENTINELS": "b:2"}, "REDIS_SENTINEL_MASTER: required"),
        ({"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_MASTER: set only with REDIS_SENTINELS"),
        ({"REDIS_CLUSTER_NODES": "a"}, "REDIS_CLUSTER_NODES: a comma-separated list of host:port"),
        ({"REDIS_SENTINELS": "a:99999", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS: a comma"),
    ],
)
def test_contradicting_redis_settings_stop_start_up(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_environ({"JWT_SECRET_KEY": "k" * 64, **env})


def test_the_dev_console_port_is_the_next_one_unless_set() -> None:
    console = {**BASE, "WEBSOCKET_DEV_CONSOLE": "true", "WEBSOCKET_PORT": "9000"}
    assert Settings.from_environ(console).dev_console_port == 9001
    assert Settings.from_environ({**console, "WEBSOCKET_DEV_CONSOLE_PORT": "7000"}).dev_console_port == 7000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WEBSOCKET_PORT": "65535"}, "WEBSOCKET_DEV_CONSOLE_PORT: WEBSOCKET_PORT + 1 is past 65535"),
        ({"WEBSOCKET_DEV_CONSOLE_PORT": "8080"}, "WEBSOCKET_DEV_CONSOLE_PORT: 8080 is WEBSOCKET_PORT"),
        ({"METRICS_PORT": "8081"}, "WEBSOCKET_DEV_CONSOLE_PORT: 8081 is METRICS_PORT"),
    ],
)
def test_a_dev_console_port_the_gateway_cannot_have_stops_start_up(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=f"^{re.escape(message)}"):
        Settings.from_environ({**BASE, "WEBSOCKET_DEV_CONSOLE": "true", **env})
