"""The upstream internals the gateway relies on, checked once at start-up.

The gateway subclasses uvicorn's protocols and uvicorn-worker's worker and drives redis-py's
connection by hand. None of that is public API: a release that renames or drops one of these
often breaks nothing visibly (an override that is never called, an attribute nobody reads
any more) and only a protection goes away. On uvicorn 0.50 to 0.52, for example,
``WebSocketsSansIOProtocol`` had no ``pause_writing`` of its own, asyncio's no-op one ran, and
slow-consumer protection silently did nothing. So every internal is listed (internals.py) with why it is
used (and, for reading, by upstream class in this package's docstring, which a test keeps in
step), and gunicorn.conf.py stops start-up with one line naming the package and the attribute
when one is missing. pyproject.toml pins these packages to the ranges this list was checked
against (uvicorn 0.54, uvicorn-worker 0.4, gunicorn 27, websockets 17, redis 8.1,
prometheus_client 0.26).

The list itself, with the kinds of internal, is gateway/server/internals.py.
"""

from __future__ import annotations

import dis
import functools
import importlib
import inspect
import platform
import sys
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from gateway.server.internals import INTERNALS, Internal

__all__ = ["INTERNALS", "Internal", "UpstreamMismatch", "check", "exit_unless_compatible", "problems"]

# Classes whose methods do not count as the upstream's own: asyncio's protocol methods are no-ops.
_NOT_UPSTREAM = ("asyncio.", "builtins")


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
    if package == "python":
        return platform.python_version()
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _tested_range(package: str) -> str:
    """The range pyproject.toml gives ``package``, as installed with the gateway."""
    if package == "python":
        return f"Python {_requires_python()}"
    try:
        requirements = metadata.requires("gateway") or []
    except metadata.PackageNotFoundError:
        requirements = []
    wanted = package.lower().replace("_", "-")
    for line in requirements:
        requirement, _, marker = line.partition(";")
        if marker and "server" not in marker:
            continue  # another extra's requirement (the server's come with the [server] extra)
        requirement = requirement.strip()
        name = requirement.split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("!")[0].strip()
        if name.lower().replace("_", "-") == wanted:
            return requirement.replace(" ", "")
    return f"the {package} release pinned in requirements.lock"


def _requires_python() -> str:
    try:
        return metadata.metadata("gateway")["Requires-Python"] or "as pyproject.toml says"
    except (metadata.PackageNotFoundError, KeyError):
        return "as pyproject.toml says"
