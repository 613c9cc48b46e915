"""What a setting is (``Setting``) and how each kind of value is read from its variable's text.

Standard library only: the publisher library reads its defaults through these, and a backend
service that imports it must not pull in jwt, cryptography or starlette.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
_N = TypeVar("_N", int, float)

# (variable, its text or None when unset, the default) -> the value, or SettingsError.
ParseFunction = Callable[[str, str | None, T], T]


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable and what is accepted."""


@dataclass(frozen=True, slots=True)
class Parser(Generic[T]):
    """How a variable's text becomes a value; ``accepts`` is the reference's "accepted" column."""

    accepts: str
    parse: ParseFunction[T]


@dataclass(frozen=True, slots=True)
class Computed(Generic[T]):
    """A default worked out on the machine at start-up; ``shown`` is what the reference says."""

    compute: Callable[[], T]
    shown: str


@dataclass(frozen=True, slots=True)
class Setting(Generic[T]):
    """One environment variable: the ``Settings`` field it fills (None: read by gunicorn.conf.py
    or the metrics), its default, its parser and a one-line meaning for the reference
    (docs/reference.md)."""

    variable: str
    field: str | None
    default: T | Computed[T]
    parser: Parser[T]
    doc: str
    # The reference's default column where the value itself would mislead ("none: required").
    shown: str | None = None

    def from_environ(self, environ: Mapping[str, str] | None = None) -> T:
        env = os.environ if environ is None else environ
        return self.parser.parse(self.variable, env.get(self.variable), self.default_value())

    def default_value(self) -> T:
        if isinstance(self.default, Computed):
            return self.default.compute()
        return self.default

    def shown_default(self) -> str:
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, Computed):
            return self.default.shown
        return f"`{_plain(self.default)}`"


def _plain(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def integer(low: int, high: int) -> Parser[int]:
    return Parser(f"integer, {low} to {high}", _bounded(int, low, high))


def number(low: float, high: float) -> Parser[float]:
    return Parser(f"number, {_plain(low)} to {_plain(high)}", _bounded(float, low, high))


def _bounded(kind: type[_N], low: _N, high: _N) -> ParseFunction[_N]:
    noun = "an integer" if kind is int else "a number"

    def parse(name: str, raw: str | None, default: _N) -> _N:
        if raw is None or raw.strip() == "":
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise SettingsError(f"{name}: {noun} from {low} to {high}, got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name}: {noun} from {low} to {high}, got {raw!r}")
        return value

    return parse


def byte_size(low: int, high: int) -> Parser[int]:
    """Like ``integer``, but the message says the unit (the publisher library shows it too)."""

    def parse(name: str, raw: str | None, default: int) -> int:
        text = (raw or "").strip()
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise SettingsError(f"{name}: an integer from {low} to {high} (bytes), got {text!r}")
        return value

    return Parser(f"bytes, {low} to {high}", parse)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def flag() -> Parser[bool]:
    def parse(name: str, raw: str | None, default: bool) -> bool:
        text = (raw or "").strip().lower()
        if text == "":
            return default
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise SettingsError(f"{name}: true or false, got {text!r}")

    return Parser("`true` or `false` (also 1/0, yes/no, on/off)", parse)


def text(accepts: str) -> Parser[str]:
    """Taken as it is, even empty."""

    def parse(name: str, raw: str | None, default: str) -> str:
        return default if raw is None else raw

    return Parser(accepts, parse)


def optional_text(accepts: str) -> Parser[str | None]:
    """Unset and empty both mean None."""

    def parse(name: str, raw: str | None, default: str | None) -> str | None:
        return raw or default

    return Parser(accepts, parse)


def required(accepts: str, hint: str) -> Parser[str]:
    def parse(name: str, raw: str | None, default: str) -> str:
        if not raw:
            raise SettingsError(f"{name}: required ({hint})")
        return raw

    return Parser(accepts, parse)


def choice(options: Collection[str]) -> Parser[str]:
    accepted = ", ".join(sorted(options))

    def parse(name: str, raw: str | None, default: str) -> str:
        value = default if raw is None else raw
        if value not in options:
            raise SettingsError(f"{name}: one of {accepted}, got {value!r}")
        return value

    return Parser(f"one of {accepted}", parse)


def name_part() -> Parser[str]:
    """A piece of a Redis key: the gateway puts ':' between the pieces itself, and braces around
    the hash tags of Redis Cluster."""

    def parse(name: str, raw: str | None, default: str) -> str:
        value = default if raw is None else raw
        if not value or any(c in ":{}" or c.isspace() for c in value):
            raise SettingsError(f"{name}: a non-empty name without ':', braces or spaces")
        return value

    return Parser("a non-empty name without `:`, braces or spaces", parse)


def url(schemes: tuple[str, ...]) -> Parser[str]:
    prefixes = tuple(f"{scheme}://" for scheme in schemes)
    listed = ", ".join(prefixes[:-1]) + f" or {prefixes[-1]}"

    def parse(name: str, raw: str | None, default: str) -> str:
        value = default if raw is None else raw
        if not value.startswith(prefixes):
            raise SettingsError(f"{name}: a {listed} URL")
        return value

    shown = ", ".join(f"`{p}`" for p in prefixes[:-1]) + f" or `{prefixes[-1]}`"
    return Parser(f"a {shown} URL", parse)


def host_ports() -> Parser[tuple[tuple[str, int], ...]]:
    """``host:port[,host:port...]``; unset or empty means none."""

    def parse(
        name: str, raw: str | None, default: tuple[tuple[str, int], ...]
    ) -> tuple[tuple[str, int], ...]:
        if not raw:
            return default
        found = []
        for item in raw.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise SettingsError(f"{name}: a comma-separated list of host:port, got {item.strip()!r}")
            found.append((host.strip("[]"), int(port)))
        return tuple(found)

    return Parser("comma-separated `host:port` list", parse)


def json_strings(what: str, example: str) -> Parser[tuple[str, ...]]:
    """A JSON list of non-empty strings."""

    def parse(name: str, raw: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
        if raw is None:
            return default
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise SettingsError(f"{name}: a JSON list of {what} like {example}, got {raw!r}")
        return tuple(value)

    return Parser(f"a JSON list of {what}, e.g. `{example}`", parse)
