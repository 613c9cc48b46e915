"""Repeated log lines are rate-limited per call site; the first ones and a count of the rest get through."""

from __future__ import annotations

import logging

import pytest

from gateway.telemetry.throttled_log import BURST, INTERVAL, ThrottledLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> tuple[ThrottledLog, Clock, pytest.LogCaptureFixture]:
    clock = Clock()
    caplog.set_level(logging.WARNING, logger="test.throttled")
    return ThrottledLog(logging.getLogger("test.throttled"), clock), clock, caplog


def test_a_burst_then_one_line_per_interval_saying_how_many_were_held_back(
    logged: tuple[ThrottledLog, Clock, pytest.LogCaptureFixture],
) -> None:
    log, clock, caplog = logged
    for size in range(1000):
        log.warning("dropped %d bytes", size)
    assert [r.getMessage() for r in caplog.records] == [f"dropped {size} bytes" for size in range(BURST)]
    clock.now += INTERVAL
    log.warning("dropped %d bytes", 7)
    assert caplog.records[-1].getMessage() == f"dropped 7 bytes (and {1000 - BURST} more like it, not logged)"
    log.warning("dropped %d bytes", 8)
    assert len(caplog.records) == BURST + 1


def test_each_call_site_has_its_own_budget_and_the_record_names_the_caller(
    logged: tuple[ThrottledLog, Clock, pytest.LogCaptureFixture],
) -> None:
    log, _, caplog = logged
    for _ in range(100):
        log.warning("one kind")
        log.warning("another kind")
    assert [r.getMessage() for r in caplog.records] == ["one kind", "another kind"] * BURST
    assert {r.funcName for r in caplog.records} == {
        "test_each_call_site_has_its_own_budget_and_the_record_names_the_caller"
    }


def test_exception_keeps_the_traceback(logged: tuple[ThrottledLog, Clock, pytest.LogCaptureFixture]) -> None:
    log, _, caplog = logged
    try:
        raise RecursionError("deep")
    except RecursionError:
        log.exception("failed")
    assert caplog.records[-1].levelno == logging.ERROR
    assert caplog.records[-1].exc_info is not None
