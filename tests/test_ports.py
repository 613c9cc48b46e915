"""Which port serves which path (gateway/ports.py), decided from the port a request arrived on."""

from __future__ import annotations

import pytest

from gateway.config.settings import Settings
from gateway.ports import PortMap
from harness.tokens import SECRET

SETTINGS = Settings.from_environ(
    {
        "JWT_SECRET_KEY": SECRET,
        "WEBSOCKET_PORT": "8080",
        "METRICS_PORT": "9090",
        "WEBSOCKET_DEV_CONSOLE": "true",
        "WEBSOCKET_DEV_CONSOLE_PORT": "8090",
    }
)


def _misrouted(port: int | None, path: str, kind: str = "http") -> bool:
    server = None if port is None else ("127.0.0.1", port)
    return PortMap(SETTINGS).misrouted({"type": kind, "path": path, "server": server})


@pytest.mark.parametrize(
    ("path", "public", "metrics", "console"),
    [
        ("/ws", True, False, True),
        ("/healthz", True, True, False),
        ("/healthz/redis", True, True, False),
        ("/metrics", False, True, False),
        ("/healthz/websocket", False, True, False),
        ("/dev", False, False, True),
        ("/dev/token", False, False, True),
        ("/dev/anything/deeper", False, False, True),
        ("/devices", True, False, False),
        ("/nowhere", True, False, False),
    ],
)
def test_each_path_is_served_on_its_ports(path: str, public: bool, metrics: bool, console: bool) -> None:
    served = tuple(not _misrouted(port, path) for port in (8080, 9090, 8090))
    assert served == (public, metrics, console)


def test_a_request_with_no_server_address_is_taken_for_the_public_port() -> None:
    assert _misrouted(None, "/dev/token")
    assert not _misrouted(None, "/ws", "websocket")


def test_the_listeners_gunicorn_binds() -> None:
    binds = [(listener.variable, listener.bind) for listener in PortMap(SETTINGS).all]
    assert binds == [
        ("WEBSOCKET_PORT", "0.0.0.0:8080"),
        ("METRICS_PORT", "0.0.0.0:9090"),
        ("WEBSOCKET_DEV_CONSOLE_PORT", "127.0.0.1:8090"),
    ]
    ipv6 = Settings.from_environ({"JWT_SECRET_KEY": SECRET, "WEBSOCKET_HOST": "::"})
    assert [listener.bind for listener in PortMap(ipv6).all] == ["[::]:8080"]
