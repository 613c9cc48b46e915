"""Every labelled counter shows each of its known label values at 0 from a worker's start, so a
dashboard on a fresh instance has no gap; the values are the ones docs/reference.md lists."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from gateway import close_codes, http_refusals
from gateway.telemetry import metrics
from harness.gateway_process import Gateway, running_gateway
from harness.metrics import scrape
from harness.paths import ROOT
from harness.redis_server import RedisServer

METRICS_TABLE = (ROOT / "docs" / "reference.md").read_text().partition("## Metrics")[2].partition("\n## ")[0]


def _documented(name: str) -> tuple[str, list[str]]:
    """The label and its values as the reference's Metrics table lists them for ``name``."""
    row = re.search(rf"^\| `{name}` \| counter \| `(\w+)`: ([^|]+) \|", METRICS_TABLE, re.M)
    assert row, name
    return row[1], [value.strip() for value in row[2].split(",")]


def _name(counter: metrics.Counter) -> str:
    return f"{counter._name}_total"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "counter",
    [metrics.CONNECTIONS, metrics.MESSAGES_DROPPED, metrics.DISCONNECTS, metrics.RECOVERIES],
    ids=_name,
)
def test_the_known_values_are_the_documented_ones(counter: metrics.Counter) -> None:
    label, values = _documented(_name(counter))
    assert list(counter._labelnames) == [label]  # type: ignore[attr-defined]
    assert list(metrics.KNOWN_LABEL_VALUES[counter]) == values


def test_gap_fill_results_are_their_own_and_the_not_recovered_ones() -> None:
    _, values = _documented("websocket_gap_fills_total")
    assert values[-1] == "and the not-recovered results above"
    not_recovered = [v for v in _documented("websocket_recoveries_total")[1] if v != "recovered"]
    assert list(metrics.KNOWN_LABEL_VALUES[metrics.GAP_FILLS]) == values[:-1] + not_recovered


def test_refusal_reasons_come_from_their_tables() -> None:
    assert metrics.KNOWN_LABEL_VALUES[metrics.REJECTIONS] == tuple(r.reason for r in close_codes.ALL)
    assert metrics.KNOWN_LABEL_VALUES[metrics.HTTP_REFUSALS] == tuple(r.reason for r in http_refusals.ALL)


@pytest.fixture(scope="module")
def fresh(redis_server: RedisServer) -> Iterator[Gateway]:
    with running_gateway(redis_server.url, workers=2) as gateway:
        gateway.wait_all_workers_ready()
        yield gateway


def test_a_fresh_gateway_shows_every_known_series_at_zero(fresh: Gateway) -> None:
    samples = scrape(fresh)
    missing = [
        f"{_name(counter)}{{{counter._labelnames[0]}={value}}}"  # type: ignore[attr-defined]
        for counter, values in metrics.KNOWN_LABEL_VALUES.items()
        for value in values
        if (_name(counter), ((counter._labelnames[0], value),)) not in samples  # type: ignore[attr-defined]
    ]
    assert missing == []
    # Nothing happened yet: every one of them is 0 (the scrape itself is no refusal).
    assert samples[("websocket_messages_dropped_total", (("reason", "slow_consumer"),))] == 0
    assert samples[("websocket_recoveries_total", (("result", "recovered"),))] == 0
