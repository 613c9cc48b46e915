"""The app as servers see it, and the resources its lifespan wires."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import uvicorn

from gateway.app import create_app
from gateway.config.settings import Settings
from gateway.state import Gateway
from harness.redis_server import RedisServer, command_calls
from harness.tokens import SECRET
from harness.waiting import eventually


def test_servers_detect_an_asgi3_app() -> None:
    """GatewayApp.__call__ returns the endpoint's coroutine instead of being one; a server that
    guesses the interface (``uvicorn --factory``) must still take it for ASGI 3, not wrap it as
    ASGI 2."""
    config = uvicorn.Config(create_app(Settings.from_environ({"JWT_SECRET_KEY": SECRET})), lifespan="off")
    config.load()
    assert config.interface == "asgi3"


async def test_the_probe_is_not_late_while_admissions_hold_every_pooled_connection(
    own_redis: RedisServer,
) -> None:
    """An admission storm holding the whole command pool does not tear down a healthy pub/sub
    connection: the probe has its own connection, so it keeps coming back on time."""
    settings = Settings.from_environ(
        {"JWT_SECRET_KEY": SECRET, "REDIS_URL": own_redis.url, "REDIS_PROBE_INTERVAL": "0.2"}
    )
    app = create_app(settings)
    monitor = own_redis.client()

    def pubsub_ids() -> list[str]:
        return [c["id"] for c in monitor.client_list(_type="pubsub")]

    async with app.starlette.router.lifespan_context(app.starlette) as state:
        gateway: Gateway = state["gateway"]  # type: ignore[index]
        await eventually(_now(lambda: gateway.broker.ready), what="the broker to be ready")
        before = pubsub_ids()
        assert len(before) == 1
        pool = gateway.redis.connection_pool
        held = [await pool.get_connection() for _ in range(pool.max_connections)]  # type: ignore[attr-defined]
        try:
            probes = command_calls(monitor).get("publish", 0)

            def probed_or_replaced() -> bool:
                return command_calls(monitor).get("publish", 0) >= probes + 5 or pubsub_ids() != before

            # Five probe rounds with no pooled connection to spare, or the pub/sub connection replaced.
            await eventually(_now(probed_or_replaced), what="five probes or a reconnect")
            assert pubsub_ids() == before
            assert gateway.broker.ready
        finally:
            for connection in held:
                await pool.release(connection)
    monitor.close()


def _now(condition: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    async def check() -> object:
        return condition()

    return check
