"""The Autobahn TestSuite's cases (run by kosoku) against the gateway's own WebSocket stack: every
case group but the slow performance ones (9.*, 12.*, 13.*) against a test-only echo app served by
the gateway's gunicorn worker and protocol (harness/echo_gateway.py), and the cases that need no
echo (ping/pong, invalid UTF-8, closing) against /ws itself.

Each verdict is compared with the checked-in baseline (autobahn_baseline.json beside this file):
a case whose verdict is worse than its baseline's fails the test. After a change that improves
verdicts (or adds cases), rewrite the baseline with UPDATE_AUTOBAHN_BASELINE=1 and review its diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kosoku import FailureError, run_fuzzingclient
from kosoku._kosoku import CaseResult

from harness.echo_gateway import EchoGateway, running_echo_gateway
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.tokens import make_token

BASELINE = Path(__file__).with_name("autobahn_baseline.json")
_SLOW_GROUPS = ["9.*", "12.*", "13.*"]
# Against /ws: the cases that judge the gateway without an echo. The others of these groups send
# valid text and expect it back, which /ws (rightly) never does; the echo app runs them all.
_WS_CASES = ["2.*", "6.*", "7.*"]
_WS_ECHO_ONLY = [
    "6.1.*", "6.2.*", "6.5.*", "6.6.2", "6.6.5", "6.6.7", "6.6.9", "6.6.11", "6.7.*", "6.9.*",
    "6.11.*", "6.22.*", "6.23.*", "7.1.1",
]  # fmt: skip
# Worst last; a verdict regresses when its rank grows. The passing ones share a rank: which of
# them a case gets may depend on timing, never on conformance.
_BEHAVIOR_RANK = {"OK": 0, "NON-STRICT": 0, "INFORMATIONAL": 0, "UNIMPLEMENTED": 1, "FAILED": 2, "ERROR": 2}
_CLOSE_RANK = {
    "OK": 0, "INFORMATIONAL": 0, "WRONG CODE": 1, "UNCLEAN": 1, "FAILED BY CLIENT": 1, "FAILED": 2,
}  # fmt: skip

Verdicts = dict[str, list[str]]


@pytest.fixture(scope="module")
def echo_gateway() -> Iterator[EchoGateway]:
    # Messages up to the suite's largest outside the performance groups (64 KiB).
    with running_echo_gateway(WEBSOCKET_MAX_MESSAGE_SIZE=str(1024 * 1024)) as server:
        yield server


@pytest.fixture(scope="module")
def ws_gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    # Every case is a connection of one user, a few at once, and closes may trail the next case.
    with running_gateway(redis_server.url, workers=1, WEBSOCKET_MAX_CONNECTIONS_PER_USER="1000") as gateway:
        yield gateway


async def _run(url: str, cases: list[str] | None, exclude: list[str]) -> Verdicts:
    try:
        results: list[CaseResult] = await run_fuzzingclient(url, cases, exclude, concurrency=4)
    except FailureError as exc:  # some cases did not pass: the baseline says which may not
        results = exc.results
    return {r.case_id: [r.behavior.value, r.behavior_close.value] for r in results}


def _regressions(target: str, verdicts: Verdicts) -> list[str]:
    baseline: Verdicts = json.loads(BASELINE.read_text())[target]
    if os.environ.get("UPDATE_AUTOBAHN_BASELINE") == "1":
        everything = json.loads(BASELINE.read_text())
        everything[target] = verdicts
        BASELINE.write_text(_baseline_text(everything))
    worse = []
    for case, (behavior, close) in baseline.items():
        if case not in verdicts:
            worse.append(f"{case}: not run (baseline {behavior}/{close})")
            continue
        now_behavior, now_close = verdicts[case]
        if (
            _BEHAVIOR_RANK[now_behavior] > _BEHAVIOR_RANK[behavior]
            or _CLOSE_RANK[now_close] > _CLOSE_RANK[close]
        ):
            worse.append(f"{case}: {now_behavior}/{now_close} (baseline {behavior}/{close})")
    return worse


def _baseline_text(everything: dict[str, Verdicts]) -> str:
    """One case a line, in case order: a diff shows each changed verdict."""
    parts = []
    for target, verdicts in everything.items():
        cases = sorted(verdicts, key=_case_key)
        lines = ",\n".join(f"  {json.dumps(case)}: {json.dumps(verdicts[case])}" for case in cases)
        parts.append(f"{json.dumps(target)}: {{\n{lines}\n }}")
    return "{\n " + ",\n ".join(parts) + "\n}\n"


def _case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def _logged_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "Traceback" in line or "[ERROR]" in line]


async def test_the_protocol_stack_keeps_its_autobahn_verdicts(echo_gateway: EchoGateway) -> None:
    """The echo app on the gateway's worker and protocol: no case worse than the baseline, and
    nothing logged at ERROR while a peer breaks every rule the suite knows."""
    verdicts = await _run(echo_gateway.url, None, _SLOW_GROUPS)
    assert len(verdicts) > 200  # the selection ran
    assert _regressions("echo", verdicts) == []
    assert _logged_errors(echo_gateway.log()) == []


async def test_ws_keeps_its_autobahn_verdicts_for_pings_invalid_utf8_and_closes(
    ws_gateway: Gateway,
) -> None:
    """/ws itself, with a valid token: pongs, invalid UTF-8 (1007) and closing handshakes."""
    url = f"{ws_gateway.ws_url}?token={make_token('autobahn', ttl=3600)}"
    verdicts = await _run(url, _WS_CASES, _WS_ECHO_ONLY)
    assert len(verdicts) > 50
    assert _regressions("ws", verdicts) == []
    assert _logged_errors(ws_gateway.log()) == []
