"""One validated settings object, built once from the environment."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from gateway import jwt_keys
from gateway.payload_limit import DEFAULT_MAX_PAYLOAD_SIZE, max_payload_size_from_environ

_T = TypeVar("_T", int, float)

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable and what is accepted."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the gateway. Times are in seconds, sizes in bytes."""

    jwt_secret_key: str
    host: str = "0.0.0.0"
    port: int = 8080
    web_concurrency: int = 1
    max_connections_per_user: int = 5
    idle_timeout: float = 300.0
    redis_url: str = "redis://localhost:6379"
    channel_prefix: str = "ws"
    jwt_algorithm: str = "HS256"
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: float = 5.0
    cors_origins: tuple[str, ...] = ()
    send_queue_size: int = 256
    max_inbound_message_size: int = 4096
    max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    per_message_deflate: bool = False
    max_connections_per_worker: int = 10_000
    drain_window: float = 10.0
    redis_probe_interval: float = 5.0
    lease_ttl: float = 30.0
    handshake_timeout: float = 10.0
    max_pending_handshakes: int = 1000
    client_messages_per_second: float = 10.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        secret = env.get("JWT_SECRET_KEY", "")
        if not secret:
            raise SettingsError("JWT_SECRET_KEY: required (an HS* secret, or a PEM public key for RS*/ES*)")
        algorithm = env.get("JWT_ALGORITHM", "HS256")
        _check_algorithm(algorithm, secret)
        prefix = env.get("REDIS_CHANNEL_PREFIX", "ws")
        if not prefix or ":" in prefix or any(c.isspace() for c in prefix):
            raise SettingsError("REDIS_CHANNEL_PREFIX: a non-empty name without ':' or spaces")
        try:
            max_payload_size = max_payload_size_from_environ(env)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        if _flag(env, "WEBSOCKET_LIMIT_FAIL_OPEN", False):
            raise SettingsError(
                "WEBSOCKET_LIMIT_FAIL_OPEN: removed; admission needs Redis and fails closed (1013)"
            )
        redis_url = env.get("REDIS_URL", "redis://localhost:6379")
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError("REDIS_URL: a redis://, rediss:// or unix:// URL")
        return cls(
            jwt_secret_key=secret,
            host=env.get("WEBSOCKET_HOST", "0.0.0.0"),
            port=_number(env, "WEBSOCKET_PORT", 8080, int, 1, 65535),
            web_concurrency=_number(env, "WEB_CONCURRENCY", os.cpu_count() or 1, int, 1, 256),
            max_connections_per_user=_number(env, "WEBSOCKET_MAX_CONNECTIONS_PER_USER", 5, int, 1, 10_000),
            idle_timeout=_number(env, "WEBSOCKET_IDLE_TIMEOUT", 300.0, float, 1.0, 86_400.0),
            redis_url=redis_url,
            channel_prefix=prefix,
            jwt_algorithm=algorithm,
            jwt_audience=env.get("JWT_AUDIENCE") or None,
            jwt_issuer=env.get("JWT_ISSUER") or None,
            jwt_leeway=_number(env, "JWT_LEEWAY", 5.0, float, 0.0, 300.0),
            cors_origins=_origins(env.get("CORS_ORIGINS", "[]")),
            send_queue_size=_number(env, "WEBSOCKET_SEND_QUEUE_SIZE", 256, int, 1, 100_000),
            max_inbound_message_size=_number(
                env, "WEBSOCKET_MAX_MESSAGE_SIZE", 4096, int, 128, 16 * 1024 * 1024
            ),
            max_payload_size=max_payload_size,
            ping_interval=_number(env, "WEBSOCKET_PING_INTERVAL", 20.0, float, 0.0, 3600.0),
            ping_timeout=_number(env, "WEBSOCKET_PING_TIMEOUT", 20.0, float, 0.1, 3600.0),
            per_message_deflate=_flag(env, "WEBSOCKET_PER_MESSAGE_DEFLATE", False),
            max_connections_per_worker=_number(
                env, "WEBSOCKET_MAX_CONNECTIONS_PER_WORKER", 10_000, int, 1, 1_000_000
            ),
            drain_window=_number(env, "WEBSOCKET_DRAIN_WINDOW", 10.0, float, 0.0, 3600.0),
            redis_probe_interval=_number(env, "REDIS_PROBE_INTERVAL", 5.0, float, 0.1, 300.0),
            lease_ttl=_number(env, "WEBSOCKET_LEASE_TTL", 30.0, float, 1.0, 3600.0),
            handshake_timeout=_number(env, "WEBSOCKET_HANDSHAKE_TIMEOUT", 10.0, float, 0.5, 300.0),
            max_pending_handshakes=_number(env, "WEBSOCKET_MAX_PENDING_HANDSHAKES", 1000, int, 1, 100_000),
            client_messages_per_second=_number(
                env, "WEBSOCKET_CLIENT_MESSAGES_PER_SECOND", 10.0, float, 0.1, 10_000.0
            ),
        )


def _number(env: Mapping[str, str], name: str, default: _T, kind: type[_T], low: _T, high: _T) -> _T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    noun = "an integer" if kind is int else "a number"
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}: {noun} from {low} to {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}: {noun} from {low} to {high}, got {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}: true or false, got {raw!r}")


def _origins(raw: str) -> tuple[str, ...]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(o, str) and o for o in value):
        raise SettingsError(f'CORS_ORIGINS: a JSON list of origins like ["https://app.example"], got {raw!r}')
    return tuple(value)


def _check_algorithm(algorithm: str, secret: str) -> None:
    """The key must be usable for the algorithm (parsed now), or every client would get 401."""
    is_pem = secret.lstrip().startswith("-----BEGIN")
    if algorithm in HMAC_ALGORITHMS:
        # A public key used as an HMAC secret is the classic algorithm-confusion attack.
        if is_pem:
            raise SettingsError(f"JWT_SECRET_KEY: {algorithm} needs a shared secret, not a PEM key")
        problem = jwt_keys.hmac_problem(algorithm, secret)
    elif algorithm in ASYMMETRIC_ALGORITHMS:
        if not is_pem:
            raise SettingsError(f"JWT_SECRET_KEY: {algorithm} needs a PEM public key")
        problem = jwt_keys.public_key_problem(algorithm, secret)
    else:
        accepted = ", ".join(sorted(HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS))
        raise SettingsError(f"JWT_ALGORITHM: one of {accepted}, got {algorithm!r}")
    if problem is not None:
        raise SettingsError(f"JWT_SECRET_KEY: {problem}")
