"""The register of upstream internals the gateway relies on: each with its package, owner, kind
and why (gateway/server/upstream.py checks them at start-up; this package's docstring names them
by upstream class, which tests/test_server.py keeps in step).

Kinds: ``method`` must be defined by the upstream class or its upstream bases (asyncio's
do-nothing protocol methods do not count), with the named parameters if any; ``attribute`` must
exist on the class (a class attribute, property or enum member); ``instance`` must be assigned
to ``self`` by some method of the class or its upstream bases.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

Kind = Literal["method", "attribute", "instance"]

_WS = "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol"
_HTTP = "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol"
_CYCLE = "uvicorn.protocols.http.httptools_impl:RequestResponseCycle"
_WORKER = "uvicorn_worker:UvicornWorker"
_SERVER = "uvicorn.server:Server"
_GUNICORN_WORKER = "gunicorn.workers.base:Worker"
_SANS_IO = "websockets.server:ServerProtocol"
_CONN = "redis.asyncio.connection:AbstractConnection"
_POOL = "redis.asyncio.connection:ConnectionPool"
_TCP = "redis.connection:Connection"
_ASYNC_TCP = "redis.asyncio.connection:Connection"
_MMAP = "prometheus_client.mmap_dict:MmapedDict"
_SENTINEL = "redis.sentinel:Sentinel"
_ASYNC_SENTINEL = "redis.asyncio.sentinel:Sentinel"
_SENTINEL_POOL = "redis.sentinel:SentinelConnectionPool"
_ASYNC_SENTINEL_POOL = "redis.asyncio.sentinel:SentinelConnectionPool"


@dataclass(frozen=True, slots=True)
class Internal:
    package: str  # the distribution, as pyproject.toml names it
    owner: str  # "module:Qualified.Name"
    name: str
    kind: Kind
    why: str
    parameters: tuple[str, ...] = ()


def _ws(name: str, kind: Kind, why: str) -> Internal:
    return Internal("uvicorn", _WS, name, kind, why)


def _http(name: str, kind: Kind, why: str) -> Internal:
    return Internal("uvicorn", _HTTP, name, kind, why)


INTERNALS: tuple[Internal, ...] = (
    # gateway/server/protocol.py: GatewayWebSocketProtocol(WebSocketsSansIOProtocol)
    _ws("pause_writing", "method", "clears writable: the slow-consumer protection"),
    _ws("resume_writing", "method", "overridden to flush a connection's queued frames"),
    _ws("send", "method", "overridden: close frames pass flow control"),
    _ws("send_receive_event_to_app", "method", "overridden: invalid UTF-8 closes with 1007"),
    _ws("handle_parser_exception", "method", "closes the socket after invalid UTF-8"),
    _ws("handle_connect", "method", "overridden: hands the Link to the app"),
    _ws("data_received", "method", "overridden: idle timeout and unparsable handshakes"),
    _ws("handle_ping", "method", "overridden: pings count against the message budget"),
    _ws("handle_pong", "method", "overridden: pongs count against the message budget"),
    _ws("keepalive_timeout", "method", "overridden: a ping timeout tells the app, labelled ping_timeout"),
    _ws("shutdown", "method", "overridden: what is left closes with 1001 going_away"),
    _ws("on_task_complete", "method", "overridden: a socket the app is done with is reset if it lingers"),
    _ws("queue", "instance", "replaced by a leaner inbox"),
    _ws("writable", "instance", "replaced by a leaner flag; read by can_write"),
    _ws("conn", "instance", "the websockets protocol the frames go through"),
    _ws("transport", "instance", "frames are written to it directly"),
    _ws("handshake_initiated", "instance", "tells a parsed handshake from a rejected one"),
    _ws("handshake_complete", "instance", "no frame before the accept"),
    _ws("close_sent", "instance", "no frame after the close"),
    _ws("frames", "instance", "the client's message, checked for UTF-8"),
    _ws("curr_msg_data_type", "instance", "text or binary client message"),
    _ws("request", "instance", "emptied after the accept to free the handshake"),
    _ws("scope", "instance", "carries the Link extension"),
    _ws("response", "instance", "emptied after the accept"),
    _ws("close_timer", "instance", "replaced by a reset after CLOSE_TIMEOUT"),
    _ws("read_paused", "instance", "cleared when a flood of pings stops reading"),
    _ws("disconnected", "instance", "no reset timer for a socket already gone"),
    _ws("loop", "instance", "timers and the activity clock"),
    _ws("handle_text", "method", "overridden: a fragment spends the message budget"),
    _ws("handle_bytes", "method", "overridden: a fragment spends the message budget"),
    _ws("handle_cont", "method", "overridden: a continuation spends the message budget"),
    _ws("start_keepalive", "method", "overridden: the socket joins the worker's ping wheel"),
    _ws("stop_keepalive", "method", "overridden: the socket leaves the worker's ping wheel"),
    _ws("ping_interval", "instance", "when the wheel pings the socket"),
    _ws("ping_timeout", "instance", "when the wheel gives up on its pong"),
    _ws("pending_ping_payload", "instance", "the ping out: uvicorn's handle_pong matches the pong"),
    _ws("ping_sent_at", "instance", "when the ping went out"),
    # gateway/server/http.py: GatewayHttpProtocol(HttpToolsProtocol)
    _http("on_message_begin", "method", "starts a keep-alive request's deadline and head count"),
    _http("on_url", "method", "overridden: the request target's limit (414)"),
    _http("on_header", "method", "overridden: the header limits (431)"),
    _http("on_headers_complete", "method", "ends the deadline; upgrade rules, pipeline depth, descriptors"),
    _http("on_response_complete", "method", "starts the next request's deadline"),
    _http("data_received", "method", "overridden: the head is fed in slices and counted"),
    _http("connection_made", "method", "starts the handshake deadline"),
    _http("connection_lost", "method", "cancels the handshake deadline"),
    _http("handle_websocket_upgrade", "method", "called by our data_received"),
    _http("_should_upgrade", "method", "called by our data_received and on_headers_complete"),
    _http("_unsupported_upgrade_warning", "method", "called by our data_received"),
    _http("_unset_keepalive_if_required", "method", "called by our data_received"),
    _http("send_400_response", "method", "answers what the parser rejects"),
    _http("parser", "instance", "fed by our data_received; its version and upgrade flag"),
    _http("headers", "instance", "the request's headers: is there a Host"),
    _http("cycle", "instance", "the request being answered"),
    _http("pipeline", "instance", "the requests waiting behind it: their number is bounded"),
    _http("logger", "instance", "uvicorn's line for an invalid request"),
    _http("transport", "instance", "closed when headers are too slow"),
    _http("loop", "instance", "the header deadline's timer"),
    Internal(
        "uvicorn", _CYCLE, "keep_alive", "instance", "the last queued answer of a pipeline too deep closes"
    ),
    # gateway/server/worker.py: GatewayWorker(UvicornWorker) and _DrainingServer(Server)
    Internal("uvicorn", _SERVER, "serve", "method", "runs the worker", ("sockets",)),
    Internal("uvicorn", _SERVER, "shutdown", "method", "overridden: drain first", ("sockets",)),
    Internal("uvicorn", _SERVER, "servers", "instance", "closed before the drain"),
    Internal("uvicorn", _SERVER, "started", "instance", "boot error when unset"),
    Internal(
        "uvicorn",
        "uvicorn.config:Config",
        "__init__",
        "method",
        "takes the worker's CONFIG_KWARGS",
        ("ws_max_size", "ws_ping_interval", "ws_ping_timeout", "ws_per_message_deflate", "server_header"),
    ),
    Internal("uvicorn-worker", _WORKER, "_serve", "method", "overridden: SIGTERM drains the sockets"),
    Internal("uvicorn-worker", _WORKER, "_install_sigquit_handler", "method", "called by our _serve"),
    Internal("uvicorn-worker", _WORKER, "CONFIG_KWARGS", "attribute", "ws, ping, size and timeout settings"),
    Internal("uvicorn-worker", _WORKER, "config", "instance", "the Config our _serve runs"),
    Internal("gunicorn", "gunicorn.arbiter:Arbiter", "WORKER_BOOT_ERROR", "attribute", "a failed boot"),
    Internal("gunicorn", "gunicorn.arbiter:Arbiter", "SIG_QUEUE", "instance", "a stop before post_fork"),
    Internal("gunicorn", _GUNICORN_WORKER, "init_signals", "method", "overridden: a stop held since fork"),
    Internal("gunicorn", _GUNICORN_WORKER, "load_wsgi", "method", "overridden: create_app(settings)"),
    Internal("gunicorn", _GUNICORN_WORKER, "wsgi", "instance", "the app, for the drain"),
    Internal("gunicorn", _GUNICORN_WORKER, "sockets", "instance", "the listening sockets"),
    Internal("gunicorn", "gunicorn.glogging:Logger", "error_log", "instance", "the gateway logs through it"),
    Internal("gunicorn", "gunicorn.sock:BaseSocket", "sock", "instance", "the plain socket, for uvicorn"),
    # gateway/server/protocol.py reads the websockets sans-I/O connection directly.
    Internal("websockets", "websockets.protocol:State", "OPEN", "attribute", "data frames only while open"),
    Internal("websockets", _SANS_IO, "handshake_exc", "instance", "a rejected handshake"),
    Internal("websockets", _SANS_IO, "extensions", "instance", "compression on"),
    Internal("websockets", _SANS_IO, "send_text", "method", "compressed frames"),
    Internal("websockets", _SANS_IO, "send_close", "method", "1007 and going_away closes"),
    Internal("websockets", _SANS_IO, "fail", "method", "the ping_timeout close"),
    Internal("websockets", _SANS_IO, "data_to_send", "method", "bytes to write"),
    Internal("websockets", _SANS_IO, "state", "instance", "data frames only while open"),
    Internal("websockets", _SANS_IO, "close_sent", "instance", "the close websockets sent, relabelled"),
    Internal("websockets", _SANS_IO, "logger", "instance", "replaced by a quieter logger"),
    # gateway/broker/session.py drives each pub/sub connection without redis-py's PubSub.
    Internal("redis", _CONN, "read_response", "method", "the pub/sub reader", ("timeout",)),
    Internal("redis", _CONN, "send_packed_command", "method", "SUBSCRIBE batches", ("check_health",)),
    Internal("redis", _CONN, "pack_commands", "method", "SUBSCRIBE batches"),
    Internal("redis", _POOL, "make_connection", "method", "a private connection"),
    # gateway/topology/modes.py: a cluster client reads the COMMAND table once.
    Internal("redis", "redis.asyncio.cluster:RedisCluster", "commands_parser", "attribute", "replaced"),
    Internal(
        "redis", "redis._parsers.commands:AsyncCommandsParser", "initialize", "method", "read once", ("node",)
    ),
    Internal("redis", "redis._parsers.commands:AsyncCommandsParser", "commands", "instance", "the table"),
    # gateway/server/resolving.py looks host names up with a deadline before redis-py connects.
    Internal("redis", _TCP, "_connect", "method", "wrapped: a bounded lookup first (the master)"),
    Internal("redis", _TCP, "host", "instance", "the looked-up address while redis-py connects"),
    Internal("redis", _TCP, "socket_connect_timeout", "instance", "the lookup's deadline"),
    Internal("redis", _TCP, "socket_type", "instance", "the address family to look up"),
    Internal("redis", _ASYNC_TCP, "_connect", "method", "wrapped: a bounded lookup first (the workers)"),
    Internal("redis", _ASYNC_TCP, "_connection_arguments", "method", "wrapped: the looked-up address"),
    # gateway/topology/sentinels.py: AsyncSentinels and SyncSentinels(Sentinel) ask every sentinel.
    *(
        internal
        for sentinel in (_SENTINEL, _ASYNC_SENTINEL)
        for internal in (
            Internal("redis", sentinel, "discover_master", "method", "overridden: newest epoch wins"),
            Internal("redis", sentinel, "check_master_state", "method", "a sentinel names a usable master"),
            Internal("redis", sentinel, "sentinels", "instance", "the sentinels' clients, asked at once"),
        )
    ),
    Internal("redis", _ASYNC_SENTINEL, "connection_kwargs", "instance", "the master's connection options"),
    Internal(
        "redis",
        _ASYNC_SENTINEL_POOL,
        "__init__",
        "method",
        "built directly: the pub/sub pool and BlockingSentinelPool",
        ("service_name", "sentinel_manager"),
    ),
    # gateway/broker/sentinel.py moves the pools still on another server after a switch.
    Internal("redis", _ASYNC_SENTINEL_POOL, "master_address", "instance", "the master a pool is on"),
    # gateway/publishing/: a publisher that built its client closes the sentinels' clients too.
    Internal("redis", _SENTINEL_POOL, "sentinel_manager", "instance", "the sentinels behind a client"),
    Internal("redis", _ASYNC_SENTINEL_POOL, "sentinel_manager", "instance", "the sentinels behind a client"),
    # gateway/telemetry/metrics_archive.py folds a dead worker's metric files.
    Internal("prometheus-client", _MMAP, "read_all_values_from_file", "method", "a dead worker's file"),
    Internal("prometheus-client", _MMAP, "write_value", "method", "writes the archive"),
    # gateway/app.py marks the app a coroutine function for Starlette; Python 3.12 has a public way.
    *(
        (Internal("python", "asyncio:coroutines", "_is_coroutine", "attribute", "the mark before 3.12"),)
        if sys.version_info < (3, 12)
        else ()
    ),
)
