"""Each user's resumes and replayed bytes on one worker: token buckets, refilled evenly."""

from __future__ import annotations

from gateway.history.resume_budget import ResumeBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_minute_of_resumes_then_one_per_refill() -> None:
    clock = Clock()
    budget = ResumeBudget(resumes_per_minute=3, bytes_per_minute=10**9, clock=clock)
    assert [budget.allows("alice") for _ in range(4)] == [True, True, True, False]
    assert budget.allows("bob")  # one user's loop spends only its own budget
    clock.now += 20  # a third of a minute: one resume back
    assert [budget.allows("alice") for _ in range(2)] == [True, False]


def test_an_overdrawn_byte_budget_refuses_until_paid_back() -> None:
    clock = Clock()
    budget = ResumeBudget(resumes_per_minute=100, bytes_per_minute=1000, clock=clock)
    assert budget.allows("alice")
    budget.charge("alice", 1500)  # one replay may overdraw
    assert not budget.allows("alice")
    clock.now += 30  # half a minute pays back 500: still nothing left
    assert not budget.allows("alice")
    clock.now += 1
    assert budget.allows("alice")


def test_idle_users_are_forgotten() -> None:
    clock = Clock()
    budget = ResumeBudget(resumes_per_minute=1, bytes_per_minute=1000, clock=clock)
    for i in range(1024):
        budget.allows(f"user-{i}")
    clock.now += 61
    assert budget.allows("newcomer")
    assert len(budget._buckets) == 1
