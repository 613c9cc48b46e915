"""Host name lookups with a deadline, for every connection the gateway makes (its master and its
workers; gateway/server/resolving.py puts it under redis-py's connects).

``getaddrinfo`` has no deadline of its own: with a nameserver that does not answer, glibc waits its
timeout for each try, server and address family (10 s with one nameserver, 40 s inside a Compose
network), and a lookup cannot be cancelled. A connect timeout does not cover it on the sync
client, and on the async one (uvloop runs lookups on libuv's four threads) it abandons the lookup
but leaves it queued there. So each lookup here runs in a thread of its own and its callers wait at
most their deadline; callers of the same name share the lookup in flight, so a resolver that
stops answering holds one thread per name, not one per connect. A lookup past its deadline gives
the name's last answer, or raises ``socket.gaierror`` (``EAI_AGAIN``), which redis-py reports as
a connection error: an admission is refused with 1013, as when Redis is down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]
_Key = tuple[str, int | str | None, int, int]

_lock = threading.Lock()
# Each lookup in flight, with when it began.
_in_flight: dict[_Key, tuple[Future[Sequence[AddressInfo]], float]] = {}
# The last answer for each name, used when a fresh lookup misses its deadline.
_answers: dict[_Key, Sequence[AddressInfo]] = {}


def lookup(
    host: str, port: int | str | None, *, timeout: float, family: int = 0, kind: int = socket.SOCK_STREAM
) -> Sequence[AddressInfo]:
    """``socket.getaddrinfo(host, port, family, kind)``, or ``socket.gaierror`` after ``timeout`` s."""
    key, future, wait = _begin(host, port, family, kind, timeout)
    try:
        return future.result(wait)
    except FutureTimeout:
        return _last_answer(key, timeout)


async def lookup_async(
    host: str, port: int | str | None, *, timeout: float, family: int = 0, kind: int = socket.SOCK_STREAM
) -> Sequence[AddressInfo]:
    """``lookup`` for the event loop: it waits without holding the loop up."""
    key, future, wait = _begin(host, port, family, kind, timeout)
    # The lookup's future is running, so a caller that gives up cannot cancel it for the others.
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), wait)
    except TimeoutError:
        return _last_answer(key, timeout)


def _begin(
    host: str, port: int | str | None, family: int, kind: int, timeout: float
) -> tuple[_Key, Future[Sequence[AddressInfo]], float]:
    """The name's key, the future of its lookup and how long to wait for it; an address needs no
    lookup (its future is done)."""
    key = (host, port, family, kind)
    if not _is_numeric(host):
        return key, *_shared(key, timeout)
    future: Future[Sequence[AddressInfo]] = Future()
    try:
        future.set_result(socket.getaddrinfo(host, port, family, kind, 0, socket.AI_NUMERICHOST))
    except Exception as exc:
        future.set_exception(exc)
    return key, future, timeout


def _shared(key: _Key, timeout: float) -> tuple[Future[Sequence[AddressInfo]], float]:
    """The lookup of ``key`` in flight (a new one if none), and how long to wait for it: what is
    left of ``timeout`` since it began. One that has run longer already fails at once, so while a
    name server hangs each connect costs nothing, not a deadline each, until glibc gives up."""
    now = time.monotonic()
    with _lock:
        if key in _in_flight:
            future, began = _in_flight[key]
        else:
            future, began = Future(), now
            future.set_running_or_notify_cancel()
            _in_flight[key] = future, began
            # A daemon: a lookup that never ends holds no process's exit up.
            threading.Thread(target=_run, args=(key, future), name=f"lookup {key[0]}", daemon=True).start()
    return future, max(0.0, timeout - (now - began))


def _run(key: _Key, future: Future[Sequence[AddressInfo]]) -> None:
    host, port, family, kind = key
    try:
        result = socket.getaddrinfo(host, port, family, kind)
    except Exception as exc:  # an OSError, or a UnicodeError for a name IDNA refuses
        _settle(key, future, None)
        future.set_exception(exc)
    else:
        _settle(key, future, result)
        future.set_result(result)


def _settle(key: _Key, future: Future[Sequence[AddressInfo]], answer: Sequence[AddressInfo] | None) -> None:
    """Forget the lookup before its answer goes out (the next caller starts a fresh one), and keep
    the answer."""
    with _lock:
        if key in _in_flight and _in_flight[key][0] is future:
            del _in_flight[key]
        if answer:
            _answers[key] = answer


def _last_answer(key: _Key, timeout: float) -> Sequence[AddressInfo]:
    """A lookup missed its deadline: the name's last answer if there was one (the host has most
    likely not moved), else ``socket.gaierror``."""
    with _lock:
        answer = _answers.get(key)
    if answer:
        return answer
    raise socket.gaierror(socket.EAI_AGAIN, f"no answer looking up {key[0]} within {timeout:g}s")


def _is_numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def _after_fork_in_child() -> None:
    """A forked worker has none of its master's lookup threads: it must not wait on their futures."""
    global _lock
    _lock = threading.Lock()
    _in_flight.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
