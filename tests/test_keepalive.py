"""The worker's ping wheel (gateway/server/keepalive.py) on a real event loop: every socket is
visited once per scheduling, never before its time and within a tick after it, one ping frame per
tick; a socket that leaves is never visited; one that fails costs the others nothing."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.server.keepalive import Keepalive

# A tick of 10 ms; a loaded 2-core machine may run a timer this late.
_INTERVAL = 0.1
_LAG = 0.25


class _Member:
    """A socket as the wheel sees it; with ``period``, it schedules its next visit from each visit
    (as a protocol does after a ping) until it has had ``visits``."""

    def __init__(
        self, wheel: Keepalive, at: float, fail: bool = False, period: float = 0, visits: int = 1
    ) -> None:
        self.wheel = wheel
        self.at = at
        self.fail = fail
        self.period = period
        self.wanted = visits
        self.slot = wheel.schedule(self, at)
        self.visits: list[tuple[float, bytes, bytes]] = []

    def keepalive_due(self, now: float, ping: bytes, payload: bytes) -> None:
        self.visits.append((now, ping, payload))
        if self.fail:
            raise RuntimeError("this socket's transport broke")
        if len(self.visits) < self.wanted:
            self.at = now + self.period
            self.slot = self.wheel.schedule(self, self.at)


async def _until_idle(wheel: Keepalive, members: list[_Member]) -> None:
    """Until every member still scheduled had its time and the wheel stopped its timer."""
    deadline = asyncio.get_running_loop().time() + max((m.at for m in members), default=0) + 2
    while len(wheel) or wheel._timer is not None:
        assert asyncio.get_running_loop().time() < deadline, "the wheel never finished"
        await asyncio.sleep(0.005)


@settings(max_examples=25, deadline=None)
@given(offsets=st.lists(st.floats(min_value=0, max_value=0.25), min_size=1, max_size=40))
def test_each_socket_is_visited_once_at_its_time_with_its_ticks_ping(offsets: list[float]) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        wheel = Keepalive(loop, _INTERVAL, _INTERVAL)
        start = loop.time()
        members = [_Member(wheel, start + offset) for offset in offsets]
        await _until_idle(wheel, members)
        pings_by_tick: dict[float, set[bytes]] = {}
        for member in members:
            assert len(member.visits) == 1
            now, ping, payload = member.visits[0]
            assert member.at <= now <= member.at + wheel.tick + _LAG
            assert ping == b"\x89\x04" + payload and len(payload) == 4
            pings_by_tick.setdefault(now, set()).add(ping)
        assert all(len(pings) == 1 for pings in pings_by_tick.values())
        if len(pings_by_tick) > 1:
            assert len(set.union(*pings_by_tick.values())) == len(pings_by_tick)  # a new payload a tick

    asyncio.run(run())


@settings(max_examples=20, deadline=None)
@given(
    offsets=st.lists(st.floats(min_value=0.02, max_value=0.2), min_size=1, max_size=30),
    leaving=st.data(),
)
def test_a_socket_that_leaves_is_never_visited_and_the_timer_stops(
    offsets: list[float], leaving: st.DataObject
) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        wheel = Keepalive(loop, _INTERVAL, _INTERVAL)
        start = loop.time()
        members = [_Member(wheel, start + offset) for offset in offsets]
        gone = leaving.draw(st.sets(st.sampled_from(range(len(members)))))
        for index in gone:
            wheel.discard(members[index], members[index].slot)
        await _until_idle(wheel, members)
        for index, member in enumerate(members):
            assert len(member.visits) == (0 if index in gone else 1)
        assert wheel._timer is None and not wheel._buckets

    asyncio.run(run())


def test_a_socket_whose_visit_fails_costs_the_others_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> list[_Member]:
        loop = asyncio.get_running_loop()
        wheel = Keepalive(loop, _INTERVAL, _INTERVAL)
        at = loop.time() + 0.02
        members = [_Member(wheel, at, fail=index == 3) for index in range(8)]
        await _until_idle(wheel, members)
        return members

    with caplog.at_level(logging.ERROR, logger="gateway.keepalive"):
        members = asyncio.run(run())
    assert all(len(member.visits) == 1 for member in members)
    assert [r.message for r in caplog.records] == ["a socket's keepalive failed; it is no longer pinged"]


def test_a_visit_that_schedules_the_next_keeps_the_wheel_turning() -> None:
    """Sockets reschedule themselves from their visits: one that goes far ahead does not hold back
    the wheel's timer for another already due sooner."""

    async def run() -> list[_Member]:
        loop = asyncio.get_running_loop()
        wheel = Keepalive(loop, _INTERVAL, _INTERVAL)
        now = loop.time()
        members = [
            _Member(wheel, now + 0.02, period=0.6, visits=2),  # its second visit is far ahead
            _Member(wheel, now + 0.06),  # due long before that
            _Member(wheel, now + 0.1, period=0.05, visits=3),
        ]
        await _until_idle(wheel, members)
        return members

    for member in asyncio.run(run()):
        times = [now for now, _, _ in member.visits]
        assert len(times) == member.wanted
        assert member.at <= times[-1] <= member.at + member.wheel.tick + _LAG
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert all(member.period <= gap <= member.period + member.wheel.tick + _LAG for gap in gaps)


@pytest.mark.parametrize(
    ("interval", "timeout", "tick"), [(20, 20, 1.0), (20, 5, 0.5), (0.3, 10, 0.03), (0.05, 0.05, 0.01)]
)
def test_a_tick_is_a_tenth_of_the_shorter_setting_within_bounds(
    interval: float, timeout: float, tick: float
) -> None:
    async def run() -> float:
        return Keepalive(asyncio.get_running_loop(), interval, timeout).tick

    assert asyncio.run(run()) == pytest.approx(tick)
