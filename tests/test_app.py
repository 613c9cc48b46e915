"""The app as servers see it."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings
from tests.servers import SECRET


def test_servers_detect_an_asgi3_app() -> None:
    """GatewayApp.__call__ returns the endpoint's coroutine instead of being one; a server that
    guesses the interface (``uvicorn --factory``) must still take it for ASGI 3, not wrap it as
    ASGI 2."""
    config = uvicorn.Config(create_app(Settings.from_environ({"JWT_SECRET_KEY": SECRET})), lifespan="off")
    config.load()
    assert config.interface == "asgi3"
