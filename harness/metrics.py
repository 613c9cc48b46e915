"""A gateway's /metrics as a dict of samples."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from harness.gateway_process import Gateway

Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(gateway: Gateway) -> dict[Sample, float]:
    status, body = gateway.get("/metrics")
    assert status == 200
    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
