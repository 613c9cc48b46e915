"""deploy/prometheus/: the alert rules parse (promtool check rules), and every alert has unit tests
(deploy/prometheus/alerts_test.yml, run by promtool test rules) in which it fires and does not.

Generic over the files: an alert added to alerts.yml without both kinds of case fails here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.paths import ROOT
from harness.prometheus import ALERTS, ALERTS_TEST, MISSING, binary

PROMTOOL = binary("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=MISSING)


def promtool(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def unit_test_cases() -> list[dict[str, Any]]:
    return [
        case for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for case in test["alert_rule_test"]
    ]


@needs_promtool
def test_the_alert_rules_parse() -> None:
    result = promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", ALERTS_TEST)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    cases = unit_test_cases()
    missing = []
    for rule in alert_rules():
        name = rule["alert"]
        if not any(c["alertname"] == name and c.get("exp_alerts") for c in cases):
            missing.append(f"{name}: no case where it fires")
        if not any(c["alertname"] == name and not c.get("exp_alerts") for c in cases):
            missing.append(f"{name}: no case where it does not fire")
    assert not missing, f"add them to {ALERTS_TEST.relative_to(ROOT)}: {missing}"


def test_every_case_names_an_alert_that_exists() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {c["alertname"] for c in unit_test_cases()} <= names


@needs_promtool
@pytest.mark.parametrize("name", [rule["alert"] for rule in alert_rules()])
def test_an_alert_that_never_fires_fails_its_unit_tests(name: str, tmp_path: Path) -> None:
    """The firing cases are real: with the alert's expression replaced by one that is never true,
    promtool test rules fails."""
    document = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                rule["expr"] = "vector(1) < 0"
    (tmp_path / ALERTS.name).write_text(yaml.safe_dump(document))
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=tmp_path)
    assert result.returncode != 0, f"{name} never fires, yet its unit tests pass:\n{result.stdout}"
    assert name in result.stdout + result.stderr


@needs_promtool
def test_the_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    """deploy/prometheus.yml as compose mounts it, with its rule file where compose puts it."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = [str(ALERTS)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
