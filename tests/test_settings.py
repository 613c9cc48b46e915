"""Settings come from the environment, once, and a bad value names its variable."""

from __future__ import annotations

import pytest

from gateway.settings import Settings, SettingsError

BASE = {"JWT_SECRET_KEY": "secret"}


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


def test_the_removed_fail_open_setting_stops_start_up() -> None:
    """WEBSOCKET_LIMIT_FAIL_OPEN=true promised admission while Redis is down, which the gateway
    cannot give (no subscription, no limit): an operator relying on it learns at start-up."""
    with pytest.raises(SettingsError, match=r"^WEBSOCKET_LIMIT_FAIL_OPEN: "):
        Settings.from_environ({**BASE, "WEBSOCKET_LIMIT_FAIL_OPEN": "true"})
    assert Settings.from_environ({**BASE, "WEBSOCKET_LIMIT_FAIL_OPEN": "false"})
