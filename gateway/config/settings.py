"""One validated settings object, built once from the environment through gateway/config/table.py."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config import jwt_keys, table
from gateway.config.parsers import Setting, SettingsError, flag
from gateway.config.redis import check_topology
from gateway.config.tokens import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS

__all__ = ["ASYMMETRIC_ALGORITHMS", "HMAC_ALGORITHMS", "Settings", "SettingsError"]

# Refused rather than ignored: an operator who relied on it must learn that it is gone.
_FAIL_OPEN = "WEBSOCKET_LIMIT_FAIL_OPEN"
# When several variables are wrong, start-up has always named one of these first; the rest follow
# in the table's order.
_KEY = (table.JWT_SECRET_KEY, table.JWT_ALGORITHM)
_SHARED = (table.REDIS_CHANNEL_PREFIX, table.WEBSOCKET_MAX_PAYLOAD_SIZE)
_REST = (table.REDIS_URL, *(s for s in table.GATEWAY if s not in (*_KEY, *_SHARED, table.REDIS_URL)))


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the gateway. Times are in seconds, sizes in bytes. Build it with
    ``from_environ``: the defaults, bounds and meanings are in gateway/config/table.py."""

    host: str
    port: int
    metrics_port: int
    web_concurrency: int
    max_connections_per_user: int
    idle_timeout: float
    redis_url: str
    redis_cluster_nodes: tuple[tuple[str, int], ...]
    redis_sentinels: tuple[tuple[str, int], ...]
    redis_sentinel_master: str | None
    channel_prefix: str
    jwt_secret_key: str
    jwt_algorithm: str
    jwt_audience: str | None
    jwt_issuer: str | None
    jwt_leeway: float
    revocation_ttl: float
    cors_origins: tuple[str, ...]
    send_queue_size: int
    max_inbound_message_size: int
    max_payload_size: int
    ping_interval: float
    ping_timeout: float
    per_message_deflate: bool
    max_connections_per_worker: int
    drain_window: float
    redis_probe_interval: float
    lease_ttl: float
    handshake_timeout: float
    max_pending_handshakes: int
    max_pending_handshakes_per_address: int
    client_messages_per_second: float
    history_replay_cap: int
    resumes_per_minute: int
    resume_bytes_per_minute: int
    api_keys: tuple[str, ...]
    api_max_body_size: int
    api_history_length: int
    api_history_ttl: float
    dev_console: bool
    dev_console_port: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every variable of the table; the first bad one raises SettingsError naming it."""
        env = os.environ if environ is None else environ
        values = _read(env, _KEY)
        _check_algorithm(values["jwt_algorithm"], values["jwt_secret_key"])
        values |= _read(env, _SHARED)
        if flag().parse(_FAIL_OPEN, env.get(_FAIL_OPEN), False):
            raise SettingsError(f"{_FAIL_OPEN}: removed; admission needs Redis and fails closed (1013)")
        values |= _read(env, _REST)
        values["dev_console_port"] = _console_port(values)
        settings = cls(**values)
        if settings.metrics_port == settings.port:
            raise SettingsError(f"METRICS_PORT: {settings.port} is WEBSOCKET_PORT; use another port, or 0")
        check_topology(settings.redis_cluster_nodes, settings.redis_sentinels, settings.redis_sentinel_master)
        return settings


def _read(env: Mapping[str, str], settings: tuple[Setting[Any], ...]) -> dict[str, Any]:
    return {str(s.field): s.from_environ(env) for s in settings}


def _console_port(values: dict[str, Any]) -> int:
    """With the console on, its port worked out (``0``: WEBSOCKET_PORT + 1), or SettingsError
    when it is one of the gateway's other ports; with the console off, unused and kept as read."""
    if not values["dev_console"]:
        return int(values["dev_console_port"])
    port = values["dev_console_port"] or values["port"] + 1
    name = "WEBSOCKET_DEV_CONSOLE_PORT"
    if port > 65535:
        raise SettingsError(f"{name}: WEBSOCKET_PORT + 1 is past 65535; set a port")
    for other, taken in (("WEBSOCKET_PORT", values["port"]), ("METRICS_PORT", values["metrics_port"])):
        if port == taken:
            raise SettingsError(f"{name}: {port} is {other}; use another port")
    return int(port)


def _check_algorithm(algorithm: str, secret: str) -> None:
    """The key must be usable for the algorithm (parsed now), or every client would get 401."""
    is_pem = secret.lstrip().startswith("-----BEGIN")
    if algorithm in HMAC_ALGORITHMS:
        # A public key used as an HMAC secret is the classic algorithm-confusion attack.
        if is_pem:
            raise SettingsError(f"JWT_SECRET_KEY: {algorithm} needs a shared secret, not a PEM key")
        problem = jwt_keys.hmac_problem(algorithm, secret)
    else:  # one of ASYMMETRIC_ALGORITHMS: the table's parser let nothing else through
        if not is_pem:
            raise SettingsError(f"JWT_SECRET_KEY: {algorithm} needs a PEM public key")
        problem = jwt_keys.public_key_problem(algorithm, secret)
    if problem is not None:
        raise SettingsError(f"JWT_SECRET_KEY: {problem}")
