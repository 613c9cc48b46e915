"""``Gateway``: everything one worker holds, built by the lifespan in ``gateway/app.py``.

It reaches handlers as ``request.state.gateway`` (``scope["state"]["gateway"]`` for sockets).
A module of its own so the endpoint, health checks and drain can import it without importing
the app that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.admission.auth import Authenticator
from gateway.admission.handshakes import HandshakePool
from gateway.admission.preflight import Preflight
from gateway.broker import Broker
from gateway.config.settings import Settings
from gateway.connection import ConnectionLimits
from gateway.history.reader import HistoryReader
from gateway.history.resume_budget import ResumeBudget
from gateway.hub import Hub
from gateway.leases.limiter import Limiter
from gateway.topology.modes import AsyncClient


@dataclass
class Gateway:
    """Everything one worker holds; reaches handlers as ``request.state.gateway``."""

    settings: Settings
    worker_id: str
    redis: AsyncClient
    hub: Hub
    broker: Broker
    limiter: Limiter
    authenticator: Authenticator
    history_reader: HistoryReader
    draining: bool = field(default=False)
    # The HTTP API's publishes, on a client that never sends one twice (gateway/redis_wiring.py);
    # None while the API is off.
    api_redis: AsyncClient | None = field(default=None)
    # Handshakes waiting on Redis, with each user's and client address's share
    # (gateway/admission/handshakes.py).
    handshakes: HandshakePool = field(init=False)
    # Each user's resumes (?since=) and their replayed bytes (gateway/history/resume_budget.py).
    resumes: ResumeBudget = field(init=False)
    # What a handshake is checked against before admission takes anything
    # (gateway/admission/preflight.py), and what each connection may queue, idle and send.
    preflight: Preflight = field(init=False)
    connection_limits: ConnectionLimits = field(init=False)
    # Accepted sockets whose ASGI task has not returned: a connection leaves the hub (releasing
    # its place) before its close frame goes out, and the drain must wait for that frame too.
    serving: int = field(default=0)
    # Sent with every accept: which worker holds the socket (also its pub/sub client's name).
    accept_headers: list[tuple[bytes, bytes]] = field(init=False)

    def __post_init__(self) -> None:
        self.accept_headers = [(b"x-gateway-worker", self.worker_id.encode())]
        settings = self.settings
        self.handshakes = HandshakePool(
            settings.max_pending_handshakes,
            settings.max_connections_per_user,
            settings.max_pending_handshakes_per_address,
        )
        self.resumes = ResumeBudget(settings.resumes_per_minute, settings.resume_bytes_per_minute)
        self.preflight = Preflight(settings, self.authenticator, self.hub, self.resumes)
        self.connection_limits = ConnectionLimits.of(settings)

    @property
    def pending_handshakes(self) -> int:
        return self.handshakes.count
