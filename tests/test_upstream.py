"""The start-up check of the upstream internals the gateway relies on (gateway/server/upstream.py)."""

from __future__ import annotations

import asyncio
import re

import pytest

from gateway.server.upstream import INTERNALS, Internal, UpstreamMismatch, check, problems


def test_every_internal_the_gateway_relies_on_is_installed() -> None:
    assert problems() == []
    check()


class _StandInBase(asyncio.Protocol):
    def __init__(self) -> None:
        self.writable = True

    def resume_writing(self) -> None:
        self.writable = True


class StandIn(_StandInBase):
    """Shaped like uvicorn 0.50's WebSocketsSansIOProtocol: no pause_writing of its own."""

    MODE = "sansio"

    def read_response(self, timeout: float) -> None:
        self.last_timeout = timeout


def _internal(name: str, kind: str, parameters: tuple[str, ...] = (), owner: str = "") -> Internal:
    owner = owner or f"{__name__}:StandIn"
    return Internal("uvicorn", owner, name, kind, "why it matters", parameters)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "internal",
    [
        _internal("resume_writing", "method"),
        _internal("read_response", "method", ("timeout",)),
        _internal("writable", "instance"),
        _internal("last_timeout", "instance"),
        _internal("MODE", "attribute"),
    ],
)
def test_an_internal_that_is_there_passes(internal: Internal) -> None:
    assert problems([internal]) == []


@pytest.mark.parametrize(
    "internal",
    [
        # asyncio.Protocol's no-op pause_writing is not the upstream's own: the uvicorn 0.50 case.
        _internal("pause_writing", "method"),
        _internal("read_response", "method", ("check_health",)),
        _internal("queue", "instance"),
        _internal("STATE", "attribute"),
        _internal("anything", "method", owner=f"{__name__}:Gone"),
        _internal("anything", "method", owner="tests.no_such_module:StandIn"),
    ],
)
def test_a_missing_internal_is_found(internal: Internal) -> None:
    assert len(problems([internal])) == 1


def test_a_missing_internal_stops_start_up_with_one_line_naming_package_and_attribute() -> None:
    missing = [_internal("pause_writing", "method"), _internal("queue", "instance")]
    with pytest.raises(UpstreamMismatch) as error:
        check(missing)
    message = str(error.value)
    assert "\n" not in message
    assert re.match(r"uvicorn \d+\.\d+", message)
    assert "lacks StandIn.pause_writing (why it matters)" in message
    assert message.endswith("(and 1 more)")
    assert "tested with uvicorn" in message


def test_every_internal_says_why_and_names_a_pinned_package() -> None:
    assert all(internal.why for internal in INTERNALS)
    packages = {internal.package for internal in INTERNALS} - {"python"}
    assert packages == {"uvicorn", "uvicorn-worker", "gunicorn", "websockets", "redis", "prometheus-client"}
