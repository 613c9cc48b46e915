"""python -m gateway: publish a notification, list, count or disconnect a user's connections, or mint a
development token."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis

from gateway import dev_env, keys
from gateway.config import table
from gateway.config.parsers import SettingsError
from gateway.publishing.publisher import Publisher
from gateway.topology.modes import UNAVAILABLE, Topology


def main(argv: list[str] | None = None, dev_env_file: Path = dev_env.DEV_ENV) -> int:
    args = _parser().parse_args(argv)
    taken = dev_env.apply(dev_env_file)
    if taken:
        print(f"using {', '.join(taken)} of the running make run ({dev_env_file})", file=sys.stderr)
    return _COMMANDS[args.command](args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    publish = commands.add_parser(
        "publish", help="publish JSON to a user (REDIS_URL or REDIS_CLUSTER_NODES or REDIS_SENTINELS...)"
    )
    publish.add_argument("user", nargs="?", help="the user (without --group)")
    publish.add_argument(
        "json", nargs="?", type=_json_text, help="the payload, sent byte for byte; must be valid JSON"
    )
    publish.add_argument(
        "--group", metavar="GROUP", help="to every member of a group instead: --group G JSON"
    )
    publish.add_argument(
        "--no-history", action="store_true", help="a plain PUBLISH (SPUBLISH on a cluster): not recoverable"
    )
    broadcast = commands.add_parser("broadcast", help="publish JSON to every connection")
    broadcast.add_argument(
        "json", type=_json_text, help="the payload, sent byte for byte; must be valid JSON"
    )
    broadcast.add_argument("--no-history", action="store_true", help="a plain PUBLISH: not recoverable")
    connections = commands.add_parser("connections", help="list a user's live connections cluster-wide")
    connections.add_argument("user")
    disconnect = commands.add_parser(
        "disconnect",
        help="close a user's connections on every host with 4003 (the Redis settings, REDIS_CHANNEL_PREFIX)",
    )
    disconnect.add_argument("user")
    disconnect.add_argument(
        "--connection", metavar="ID", help="only this one, as `connections USER` lists it"
    )
    online = commands.add_parser(
        "online", help="live connections per user, cluster-wide (at most 1000 users)"
    )
    online.add_argument("users", nargs="+", metavar="user")
    token = commands.add_parser("token", help="print a development token (JWT_SECRET_KEY, JWT_ALGORITHM)")
    token.add_argument("user")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires (default 3600)")
    token.add_argument(
        "--group", action="append", default=[], help="a group of its groups claim (repeatable)"
    )
    return parser


def _json_text(text: str) -> str:
    try:
        json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not valid JSON") from None
    return text


def _publish(args: argparse.Namespace) -> int:
    if args.group is not None:
        return _publish_group(args)
    if args.user is None or args.json is None:
        _parser().error("publish: give USER JSON, or --group GROUP JSON")

    def publish(publisher: Publisher) -> None:
        _say_which_redis()
        receivers = publisher.publish(args.user, args.json)
        where = f"; position {receivers.position}" if receivers.position else ""
        print(f"delivered to {receivers} gateway worker(s){where}")

    return _with_publisher("not published", publish, history=not args.no_history, users=[args.user])


def _publish_group(args: argparse.Namespace) -> int:
    # With --group the one positional given is the payload (argparse fills ``user`` first).
    if args.user is None or args.json is not None:
        _parser().error("publish --group: give GROUP and JSON only")
    try:
        payload = _json_text(args.user)
    except argparse.ArgumentTypeError:
        _parser().error("publish --group: the payload is not valid JSON")

    def publish(publisher: Publisher) -> None:
        _print_published(publisher.publish_group(args.group, payload))

    _say_which_redis()
    return _with_publisher("not published", publish, history=not args.no_history)


def _broadcast(args: argparse.Namespace) -> int:
    def broadcast(publisher: Publisher) -> None:
        _print_published(publisher.broadcast(args.json))

    _say_which_redis()
    return _with_publisher("not published", broadcast, history=not args.no_history)


def _print_published(receivers: Any) -> None:
    where = f"; position {receivers.position}" if receivers.position else ""
    print(f"delivered to {receivers} gateway worker(s){where}")


def _connections(args: argparse.Namespace) -> int:
    try:
        keys.checked_user_id(args.user)
    except ValueError as exc:
        print(f"connections: {exc}", file=sys.stderr)
        return 2
    try:
        topology, prefix = Topology.from_environ(), table.REDIS_CHANNEL_PREFIX.from_environ()
    except SettingsError as exc:
        print(f"invalid setting {exc}", file=sys.stderr)
        return 2
    _say_which_redis()
    try:
        return _print_connections(topology, prefix, args.user)
    except UNAVAILABLE as exc:
        print(f"Redis at {topology.describe()} does not answer ({exc})", file=sys.stderr)
        return 1


def _token(args: argparse.Namespace) -> int:
    try:
        from gateway.admission.auth import issue_token
        from gateway.config.settings import Settings
    except ImportError:  # the light distribution: no PyJWT
        print("token: needs the server's dependencies: pip install 'gateway[server]'", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_environ()
    except SettingsError as exc:
        print(f"invalid setting {exc}", file=sys.stderr)
        return 2
    if not settings.jwt_algorithm.startswith("HS"):
        print("token: only HS* algorithms can be minted here (they need the shared secret)", file=sys.stderr)
        return 2
    # What the gateway would refuse (401) is refused here, with the reason.
    problem = keys.user_id_problem(args.user)
    if problem is not None:
        print(f"token: user id {args.user!r}: {problem}", file=sys.stderr)
        return 2
    for group in args.group:
        problem = keys.group_id_problem(group)
        if problem is not None:
            print(f"token: group id {group!r}: {problem}", file=sys.stderr)
            return 2
    if len(set(args.group)) > keys.MAX_GROUPS:
        print(f"token: at most {keys.MAX_GROUPS} groups", file=sys.stderr)
        return 2
    if not args.ttl > 0:
        print(f"token: --ttl must be positive, got {args.ttl:g}", file=sys.stderr)
        return 2
    print(issue_token(settings, args.user, args.ttl, time.time(), tuple(args.group)))
    return 0


def _where() -> str:
    try:
        return Topology.from_environ().describe()
    except SettingsError:
        return "?"


def _say_which_redis() -> None:
    """Without any Redis setting the default is used: say so, or a user may read another Redis's
    answer."""
    variables = (table.REDIS_URL, table.REDIS_CLUSTER_NODES, table.REDIS_SENTINELS)
    if not any(setting.variable in os.environ for setting in variables):
        print(f"REDIS_URL is unset: using {table.REDIS_URL.default_value()}", file=sys.stderr)


def _print_connections(topology: Topology, prefix: str, user_id: str) -> int:
    """One line per live lease: connection id (worker and sequence), and since when it is held
    (a deadline of the previous release: the seconds it has left)."""
    key = keys.connections_key(prefix, user_id)
    with topology.sync_client(socket_timeout=5) as client:
        # The clock of the node that holds the key (any node's would do: they share time).
        node: Any = client
        cluster = isinstance(client, redis.RedisCluster)
        if cluster:
            node = client.get_redis_connection(client.get_node_from_key(key))
        seconds, micros = node.time()
        now_ms = seconds * 1000 + micros // 1000
        leases = {conn.decode(): int(value) for conn, value in client.hgetall(key).items()}
        tag = keys.holder_tag(prefix, user_id, cluster)
        holders = {keys.worker_leases_key(conn.rpartition(":")[0], tag) for conn in leases}
        alive = {holder for holder in holders if client.exists(holder)}
    live = []
    for conn, value in sorted(leases.items()):
        if value >= keys.HELD and keys.worker_leases_key(conn.rpartition(":")[0], tag) in alive:
            live.append(f"{conn}\theld for {(now_ms - value + keys.HELD) / 1000:.1f}s")
        elif 0 < value < keys.HELD and value > now_ms:
            live.append(f"{conn}\tlease {(value - now_ms) / 1000:.1f}s")
    for line in live:
        print(line)
    print(f"{len(live)} live connection(s) for {user_id}")
    return 0


def _disconnect(args: argparse.Namespace) -> int:
    def disconnect(publisher: Publisher) -> None:
        reached = publisher.disconnect(args.user, args.connection)
        print(f"disconnected {reached} live connection(s) of {args.user}")

    return _with_publisher("disconnect", disconnect, users=[args.user])


def _online(args: argparse.Namespace) -> int:
    def online(publisher: Publisher) -> None:
        for user_id, count in publisher.online(args.users).items():
            print(f"{user_id}\t{count}")

    return _with_publisher("online", online, users=args.users)


def _with_publisher(
    failure: str, act: Callable[[Publisher], None], history: bool = True, users: Iterable[str] = ()
) -> int:
    """``act`` with a publisher configured as the gateway is (the Redis settings,
    REDIS_CHANNEL_PREFIX, WEBSOCKET_MAX_PAYLOAD_SIZE); a bad setting, a refusal (a payload too
    large, a bad user id) or a Redis that does not answer (a cluster client connects at once) is
    one line after ``failure``, and an exit status (2: the command's fault, 1: Redis's). ``users``
    are checked first, before any Redis is touched or named."""
    publisher: Publisher | None = None
    try:
        for user_id in users:
            keys.checked_user_id(user_id)
        publisher = Publisher(history=history)
        act(publisher)
    except SettingsError as exc:
        print(f"invalid setting {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{failure}: {exc}", file=sys.stderr)
        return 2
    except UNAVAILABLE as exc:
        print(f"{failure}: Redis at {_where()} does not answer ({exc})", file=sys.stderr)
        return 1
    finally:
        if publisher is not None:
            publisher.close()
    return 0


# One handler per command: the parsed arguments in, the exit status out.
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "publish": _publish,
    "broadcast": _broadcast,
    "connections": _connections,
    "disconnect": _disconnect,
    "online": _online,
    "token": _token,
}
