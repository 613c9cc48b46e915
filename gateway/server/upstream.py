"""The upstream internals the gateway relies on, checked once at start-up.

The gateway subclasses uvicorn's protocols and uvicorn-worker's worker and drives redis-py's
connection by hand. None of that is public API: a release that renames or drops one of these
often breaks nothing visibly (an override that is never called, an attribute nobody reads
any more) and only a protection goes away. On uvicorn 0.50 to 0.52, for example,
``WebSocketsSansIOProtocol`` had no ``pause_writing`` of its own, asyncio's no-op one ran, and
slow-consumer protection silently did nothing. So every internal is listed here with why it is
used (and, for reading, by upstream class in this package's docstring, which a test keeps in
step), and gunicorn.conf.py stops start-up with one line naming the package and the attribute
when one is missing. pyproject.toml pins these packages to the ranges this list was checked
against (uvicorn 0.54, uvicorn-worker 0.4, gunicorn 27, websockets 17, redis 8.1,
prometheus_client 0.26).

Kinds: ``method`` must be defined by the upstream class or its upstream bases (asyncio's
do-nothing protocol methods do not count), with the named parameters if any; ``attribute`` must
exist on the class (a class attribute, property or enum member); ``instance`` must be assigned
to ``self`` by some method of the class or its upstream bases.
"""

from __future__ import annotations

import dis
import functools
import importlib
import inspect
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

Kind = Literal["method", "attribute", "instance"]

_WS = "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol"
_HTTP = "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol"
_WORKER = "uvicorn_worker:UvicornWorker"
_SERVER = "uvicorn.server:Server"
_GUNICORN_WORKER = "gunicorn.workers.base:Worker"
_SANS_IO = "websockets.server:ServerProtocol"
_CONN = "redis.asyncio.connection:AbstractConnection"
_POOL = "redis.asyncio.connection:ConnectionPool"
_MMAP = "prometheus_client.mmap_dict:MmapedDict"
# Classes whose methods do not count as the upstream's own: asyncio's protocol methods are no-ops.
_NOT_UPSTREAM = ("asyncio.", "builtins")


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
    # gateway/server/http.py: GatewayHttpProtocol(HttpToolsProtocol)
    Internal("uvicorn", _HTTP, "on_message_begin", "method", "starts a keep-alive request's deadline"),
    Internal("uvicorn", _HTTP, "on_headers_complete", "method", "ends the handshake deadline"),
    Internal("uvicorn", _HTTP, "connection_made", "method", "starts the handshake deadline"),
    Internal("uvicorn", _HTTP, "connection_lost", "method", "cancels the handshake deadline"),
    Internal("uvicorn", _HTTP, "transport", "instance", "closed when headers are too slow"),
    Internal("uvicorn", _HTTP, "loop", "instance", "the header deadline's timer"),
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
    Internal("gunicorn", _GUNICORN_WORKER, "load_wsgi", "method", "overridden: create_app(settings)"),
    Internal("gunicorn", _GUNICORN_WORKER, "wsgi", "instance", "the app, for the drain"),
    Internal("gunicorn", _GUNICORN_WORKER, "sockets", "instance", "the listening sockets"),
    Internal("gunicorn", "gunicorn.glogging:Logger", "error_log", "instance", "the gateway logs through it"),
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
    # gateway/broker/redis.py drives one pub/sub connection without redis-py's PubSub.
    Internal("redis", _CONN, "read_response", "method", "the pub/sub reader", ("timeout",)),
    Internal("redis", _CONN, "send_packed_command", "method", "SUBSCRIBE batches", ("check_health",)),
    Internal("redis", _CONN, "pack_commands", "method", "SUBSCRIBE batches"),
    Internal("redis", _POOL, "make_connection", "method", "a private connection"),
    # gateway/redis_topology.py: a cluster client reads the COMMAND table once.
    Internal("redis", "redis.asyncio.cluster:RedisCluster", "commands_parser", "attribute", "replaced"),
    Internal(
        "redis", "redis._parsers.commands:AsyncCommandsParser", "initialize", "method", "read once", ("node",)
    ),
    Internal("redis", "redis._parsers.commands:AsyncCommandsParser", "commands", "instance", "the table"),
    # gateway/metrics_archive.py folds a dead worker's metric files.
    Internal("prometheus-client", _MMAP, "read_all_values_from_file", "method", "a dead worker's file"),
    Internal("prometheus-client", _MMAP, "write_value", "method", "writes the archive"),
)


class UpstreamMismatch(RuntimeError):
    """An installed package lacks an internal the gateway relies on; the message is one line."""


def problems(internals: Iterable[Internal] = INTERNALS) -> list[str]:
    """One line per missing internal: the package, its version, the attribute and why it matters."""
    found = []
    for internal in internals:
        if not _present(internal):
            found.append(
                f"{internal.package} {_version(internal.package)} lacks "
                f"{internal.owner.partition(':')[2]}.{internal.name} ({internal.why}); "
                f"the gateway is tested with {_tested_range(internal.package)}"
            )
    return found


def check(internals: Iterable[Internal] = INTERNALS) -> None:
    found = problems(internals)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise UpstreamMismatch(found[0] + more)


def exit_unless_compatible() -> None:
    """For gunicorn.conf.py: one line on stderr and exit status 2 when an internal is missing."""
    try:
        check()
    except UpstreamMismatch as exc:
        sys.stderr.write(f"gateway: incompatible dependency: {exc}\n")
        raise SystemExit(2) from None


def _present(internal: Internal) -> bool:
    try:
        owner = _resolve(internal.owner)
    except (ImportError, AttributeError):
        return False
    if internal.kind == "attribute":
        return hasattr(owner, internal.name)
    if internal.kind == "instance":
        return internal.name in _assigned_to_self(owner)
    method = _own_method(owner, internal.name)
    if method is None:
        return False
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return not internal.parameters
    return all(name in parameters for name in internal.parameters)


def _resolve(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    owner: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        owner = getattr(owner, part)
    return owner


def _upstream_classes(cls: type) -> list[type]:
    return [c for c in cls.__mro__ if not c.__module__.startswith(_NOT_UPSTREAM)]


def _own_method(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in vars(klass):
            return None if klass.__module__.startswith(_NOT_UPSTREAM) else vars(klass)[name]
    return None


@functools.cache
def _assigned_to_self(cls: type) -> frozenset[str]:
    """Every attribute name some method of ``cls`` (or an upstream base) stores on an object."""
    names: set[str] = set()
    for klass in _upstream_classes(cls):
        for value in vars(klass).values():
            function = getattr(value, "fget", value)  # a property's setter stores too, via fset
            for code_owner in (function, getattr(value, "fset", None)):
                code = getattr(code_owner, "__code__", None)
                if code is not None:
                    names.update(i.argval for i in dis.get_instructions(code) if i.opname == "STORE_ATTR")
    return frozenset(names)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _tested_range(package: str) -> str:
    """The range pyproject.toml gives ``package``, as installed with the gateway."""
    try:
        requirements = metadata.requires("gateway") or []
    except metadata.PackageNotFoundError:
        requirements = []
    wanted = package.lower().replace("_", "-")
    for requirement in requirements:
        if ";" in requirement:
            continue  # an extra's requirement
        name = requirement.split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("!")[0].strip()
        if name.lower().replace("_", "-") == wanted:
            return requirement.replace(" ", "")
    return f"the {package} release pinned in requirements.lock"
