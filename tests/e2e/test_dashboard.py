"""The Grafana dashboard's queries, evaluated by a real Prometheus (Debian's) that scrapes a real
gateway with two workers after some traffic: every panel query parses, and each returns data or
the allow-list below says why it legitimately cannot. The alert rules load and evaluate too.

Generic over deploy/grafana/dashboards/gateway.json and deploy/prometheus/alerts.yml: a panel or
an alert added there is tested here without a change to this file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from harness.gateway_process import Gateway, running_gateway
from harness.prometheus import ALERTS, DASHBOARD, MISSING, Prometheus, binary, running_prometheus
from harness.redis_server import RedisServer
from harness.tokens import make_token
from harness.waiting import eventually, in_thread

pytestmark = pytest.mark.skipif(binary("prometheus") is None, reason=MISSING)

# Metrics whose panels may show no data after the basic traffic this test drives, and why. A query
# that returns nothing passes only when it reads one of these.
NO_DATA_AFTER_BASIC_TRAFFIC: dict[str, str] = {
    "websocket_send_queue_overflows_total": "only a slow consumer closed with 4008 creates it",
    "websocket_gap_fills_total": "only a lost and regained pub/sub connection creates it",
}

# Grafana's own variables, as a concrete window Prometheus accepts.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "${__rate_interval}": "1m",
    "$__interval": "1m",
    "${__interval}": "1m",
    "$__range": "1m",
    "${__range}": "1m",
    "$__interval_ms": "60000",
    "$__range_s": "60",
}
_METRIC = re.compile(r"\b(?:websocket_[a-z0-9_]+|up)\b")


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows included."""
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel.get("title", "?"), target["expr"])
        for panel in panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def concrete(expr: str) -> str:
    for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
    assert "$" not in expr, (
        f"a Grafana variable this test does not know: {expr!r} (add it to GRAFANA_VARIABLES)"
    )
    return expr


def has_data(answer: dict[str, Any]) -> bool:
    """A non-empty result with at least one number (a quantile over nothing is NaN: an empty panel)."""
    result = answer["data"]["result"]
    if answer["data"]["resultType"] == "scalar":
        result = [{"value": result}]
    return any(not math.isnan(float(series["value"][1])) for series in result)


@pytest.fixture
def gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(redis_server.url, workers=2) as gw:
        yield gw


async def drive_traffic(gateway: Gateway, redis_server: RedisServer) -> list[ClientConnection]:
    """Connects, deliveries, refusals, drops and closes: what a first hour in production shows."""
    users = [f"dash-{i}" for i in range(6)]
    clients = [
        await connect(f"{gateway.ws_url}?token={make_token(user)}") for user in users for _ in range(2)
    ]
    with pytest.raises(InvalidStatus):
        await connect(f"{gateway.ws_url}?token=not-a-token")
    publisher = redis_server.client()
    for round_ in range(5):
        for user in users:
            assert publisher.publish(f"ws:{user}", json.dumps({"n": round_})) >= 1
    for client in clients:
        for _ in range(5):
            await asyncio.wait_for(client.recv(), 10)
    # Dropped by the gateway: a payload that is not UTF-8, and one over the payload limit.
    publisher.publish(f"ws:{users[0]}", b"\xfe\xfe")
    publisher.publish(f"ws:{users[0]}", b"x" * (65536 + 1))
    # A resume with a position that cannot be recovered (recoveries by result).
    resuming = await connect(f"{gateway.ws_url}?token={make_token(users[1])}&since=0-gone")
    assert json.loads(await asyncio.wait_for(resuming.recv(), 10))["type"] == "recovery"
    clients.insert(0, resuming)
    # Some connections end (durations); the rest stay open (gauges).
    for client in clients[:4]:
        await client.close()
    publisher.close()
    return clients[4:]


def panel_failures(prometheus: Prometheus, queries: list[tuple[str, str]]) -> list[str]:
    failures = []
    for title, expr in queries:
        answer = prometheus.query(concrete(expr))
        if answer["status"] != "success":
            failures.append(f"{title!r}: {expr} does not evaluate: {answer.get('error')}")
        elif not has_data(answer):
            if not any(m in NO_DATA_AFTER_BASIC_TRAFFIC for m in _METRIC.findall(expr)):
                failures.append(
                    f"{title!r}: {expr} returns no data (if that is right after basic traffic, "
                    "add its metric to NO_DATA_AFTER_BASIC_TRAFFIC with the reason)"
                )
    return failures


def rules_evaluated(prometheus: Prometheus) -> bool:
    groups = prometheus.api("rules")["data"]["groups"]
    return bool(groups) and all(rule["health"] != "unknown" for g in groups for rule in g["rules"])


async def test_every_panel_query_parses_and_returns_data(gateway: Gateway, redis_server: RedisServer) -> None:
    queries = panel_queries()
    assert queries, "no panel queries found in the dashboard"
    with running_prometheus([f"127.0.0.1:{gateway.port}"], rule_files=[ALERTS]) as prometheus:
        # Traffic after the first scrape: a rate over samples that all saw it is 0, a quantile NaN.
        await eventually(
            in_thread(lambda: has_data(prometheus.query('up{job="gateway"} == 1'))),
            timeout=15,
            interval=0.2,
            what="prometheus to scrape the gateway",
        )
        still_open = await drive_traffic(gateway, redis_server)
        failures: list[str] = []

        def settled() -> bool:
            # Rates need two scrapes after the traffic; a query that does not parse will not heal.
            found = panel_failures(prometheus, queries)
            unparsable = [f for f in found if "does not evaluate" in f]
            failures[:] = unparsable or found
            return not failures or bool(unparsable)

        try:
            with contextlib.suppress(AssertionError):
                await eventually(in_thread(settled), timeout=20, interval=0.5, what="panel data")
        finally:
            for client in still_open:
                await client.close()
        assert not failures, "\n".join(failures) + f"\n--- prometheus log ---\n{prometheus.log()[-3000:]}"

        await eventually(
            in_thread(lambda: rules_evaluated(prometheus)), timeout=15, interval=0.5, what="alert evaluation"
        )
        rules = [rule for g in prometheus.api("rules")["data"]["groups"] for rule in g["rules"]]
        assert len(rules) == len([line for line in ALERTS.read_text().splitlines() if "- alert:" in line])
        for rule in rules:
            assert rule["health"] == "ok", f"alert {rule['name']}: {rule.get('lastError')}"
