"""deploy/kubernetes, offline: every object of every variant validates against the Kubernetes API
schemas (kubernetes-validate, strict: an unknown field fails), and the manifests agree with the
gateway, its image, its settings table and the compose deployment's rules and dashboard.

No cluster runs here: what a cluster would check beyond the schemas (admission, CRDs, the adapter)
is not checked. tests/test_kubernetes_pod.py runs the gateway as the pod would."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from gateway.config import table
from gateway.config.settings import Settings
from gateway.topology.modes import Topology
from harness.paths import ROOT
from harness.prometheus import ALERTS, DASHBOARD
from tests.kubernetes_manifests import (
    VARIANTS,
    container,
    container_port,
    environment,
    one,
    pod_spec,
    rendered,
    variables_written,
)
from tests.kustomize import Resource, Unsupported, render

# The oldest release the manifests are written for, and the newest the schemas know.
KUBERNETES_VERSIONS = ["1.33", "1.37"]
GUNICORN_CONF = (ROOT / "gunicorn.conf.py").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# Prometheus Operator kinds: not in the Kubernetes API's schemas (checked below field by field).
OPERATOR_KINDS = {"PodMonitor", "PrometheusRule"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kubernetes")


@pytest.fixture(scope="module")
def base(workspace: Path) -> list[Resource]:
    return rendered("base", workspace)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_validates_against_the_api_schemas(variant: str, version: str, workspace: Path) -> None:
    resources = rendered(variant, workspace)
    errors, checked = [], 0
    for resource in resources:
        if resource["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(map(str, error.absolute_path))
            errors.append(f"{resource['kind']}/{resource['metadata']['name']} {where}: {error.message}")
        checked += 1
    assert errors == []
    assert checked >= (2 if variant == "redis" else 6)


def test_an_unknown_field_fails_validation(base: list[Resource]) -> None:
    """Strict: a misspelt field is an error, not silently dropped (as the API server would)."""
    deployment = copy.deepcopy(one(base, "Deployment", "gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_the_renderer_refuses_what_it_would_read_otherwise_than_kustomize(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(Unsupported, match="namePrefix"):
        render(tmp_path)


_OPERATOR_FIELDS = {
    # Fields of monitoring.coreos.com/v1 the manifests may use (the operator's API reference).
    "PodMonitor": {"spec": {"jobLabel", "selector", "podMetricsEndpoints", "namespaceSelector"}},
    "PrometheusRule": {"spec": {"groups"}},
}


def test_the_prometheus_operator_objects_use_their_fields(base: list[Resource]) -> None:
    monitor = one(base, "PodMonitor", "gateway")
    rule = one(base, "PrometheusRule", "gateway")
    for resource in (monitor, rule):
        assert resource["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(resource) == {"apiVersion", "kind", "metadata", "spec"}
        assert set(resource["spec"]) <= _OPERATOR_FIELDS[resource["kind"]]["spec"]
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for item in group["rules"]:
            assert set(item) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def test_the_prometheus_rule_is_deploy_prometheus_alerts(base: list[Resource]) -> None:
    assert one(base, "PrometheusRule", "gateway")["spec"] == yaml.safe_load(ALERTS.read_text())


def test_the_dashboard_config_map_is_deploy_grafana_dashboard(base: list[Resource]) -> None:
    dashboard = one(base, "ConfigMap", "gateway-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"] == {"gateway.json": DASHBOARD.read_text()}
    json.loads(dashboard["data"]["gateway.json"])


def test_the_generated_files_are_what_the_script_writes() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/kubernetes-monitoring", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_prometheus_names_the_job_as_the_alerts_and_dashboard_do(base: list[Resource]) -> None:
    monitor = one(base, "PodMonitor", "gateway")
    labels = one(base, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    job = labels[monitor["spec"]["jobLabel"]]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    expressions = ALERTS.read_text() + DASHBOARD.read_text()
    assert set(re.findall(r'job=\\?"(\w+)\\?"', expressions)) == {job}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert container_port(base, endpoint["port"]) == int(environment(base)["METRICS_PORT"])
    assert endpoint["path"] == "/metrics"


def test_every_variable_the_manifests_set_is_a_setting() -> None:
    known = {setting.variable for setting in table.ALL}
    written = variables_written()
    assert {"JWT_SECRET_KEY", "REDIS_URL", "WEB_CONCURRENCY", "REDIS_CLUSTER_NODES"} <= written
    assert sorted(written - known) == []


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "redis"])
def test_each_variant_is_settings_the_gateway_accepts(variant: str, workspace: Path) -> None:
    env = environment(rendered(variant, workspace))
    settings = Settings.from_environ(env)
    mode = Topology.from_environ(env).mode
    assert mode == {"cluster": "cluster", "sentinel": "sentinel"}.get(variant, "single")
    assert settings.web_concurrency == int(env["WEB_CONCURRENCY"])


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "redis"])
def test_the_grace_period_outlasts_the_prestop_the_drain_and_the_lease_release(
    variant: str, workspace: Path
) -> None:
    """SIGKILL comes at terminationGracePeriodSeconds, counted from the start of preStop; gunicorn
    needs the drain window plus its margin, then the master's lease release at exit."""
    resources = rendered(variant, workspace)
    margin = re.search(r"^graceful_timeout = int\(_settings\.drain_window\) \+ (\d+)$", GUNICORN_CONF, re.M)
    release = re.search(r"^_LEASE_RELEASE_AT_EXIT = ([\d.]+)$", GUNICORN_CONF, re.M)
    assert margin is not None and release is not None, "gunicorn.conf.py no longer says how long a stop takes"
    pre_stop = container(resources)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = Settings.from_environ(environment(resources)).drain_window
    needed = float(pre_stop[1]) + drain + int(margin[1]) + float(release[1])
    assert pod_spec(resources)["terminationGracePeriodSeconds"] > needed


def test_the_probes_and_the_service_reach_ports_the_gateway_listens_on(base: list[Resource]) -> None:
    """The port each names is the container's, which is WEBSOCKET_PORT or METRICS_PORT; the paths
    are routes of the app, served on that port (gateway/ports.py); the image exposes WEBSOCKET_PORT."""
    from gateway.app import create_app
    from gateway.ports import PortMap

    settings = Settings.from_environ(environment(base))
    assert {p["name"]: p["containerPort"] for p in container(base)["ports"]} == {
        "http": settings.port,
        "metrics": settings.metrics_port,
    }
    assert re.search(rf"^EXPOSE {settings.port}$", DOCKERFILE, re.M)
    routes = {route.path for route in create_app(settings).starlette.routes}  # type: ignore[attr-defined]
    ports = PortMap(settings)
    probes = {
        name: container(base)[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/healthz/redis"
    for probe in probes.values():
        port = container_port(base, probe["port"])
        assert probe["path"] in routes
        scope = {"type": "http", "path": probe["path"], "server": ("10.0.0.1", port)}
        assert not ports.misrouted(scope)
    service = one(base, "Service", "gateway")
    (service_port,) = service["spec"]["ports"]
    assert container_port(base, service_port["targetPort"]) == settings.port
    assert service["spec"]["selector"].items() <= pod_labels(base).items()


def pod_labels(resources: list[Resource]) -> dict[str, str]:
    labels: dict[str, str] = one(resources, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_the_pod_runs_the_image_as_its_user_read_only_with_its_entrypoint(base: list[Resource]) -> None:
    pod, gateway = pod_spec(base), container(base)
    (uid_gid,) = re.findall(
        r"^USER (\d+):(\d+)$", DOCKERFILE.partition("AS runtime")[2].partition("\nFROM ")[0], re.M
    )
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == tuple(
        map(int, uid_gid)
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["securityContext"]["allowPrivilegeEscalation"] is False
    # The image's ENTRYPOINT (tini) stays: `command` would replace it.
    assert "command" not in gateway
    assert gateway["args"][:2] == ["sh", "-c"]
    assert gateway["args"][2].endswith("exec gunicorn -c gunicorn.conf.py")
    # Service links would put <SERVICE>_PORT=tcp://... beside WEBSOCKET_PORT and METRICS_PORT.
    assert pod["enableServiceLinks"] is False
    # Every path the gateway writes is a volume: the metrics directory and /tmp.
    mounts = {mount["mountPath"]: mount["name"] for mount in gateway["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for path in (environment(base)["PROMETHEUS_MULTIPROC_DIR"], "/tmp"):
        assert "emptyDir" in volumes[mounts[path]], path


def test_workers_match_the_cpu_limit_and_memory_holds_every_admitted_socket(base: list[Resource]) -> None:
    """Memory: the workers' own and what each socket costs (loadtest/results/idle.json, the largest
    measured) times the sockets the pod admits; a pod killed for memory drops them all, undrained."""
    resources = container(base)["resources"]
    assert resources["requests"] == resources["limits"], "Guaranteed QoS: evicted last, never undrained"
    settings = Settings.from_environ(environment(base))
    assert float(resources["limits"]["cpu"]) == settings.web_concurrency
    idle = json.loads((ROOT / "loadtest" / "results" / "idle.json").read_text())["results"]
    per_socket = max(result["rss_kib_per_socket"] for result in idle) * 1024
    workers_alone = max(result["rss_before"] for result in idle)
    sockets = settings.web_concurrency * settings.max_connections_per_worker
    assert _bytes(resources["limits"]["memory"]) > workers_alone + per_socket * sockets


def _bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", quantity).groups()  # type: ignore[union-attr]
    return int(number) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[unit]


def test_the_autoscaler_counts_sockets_below_what_a_pod_admits_and_scales_down_one_pod_at_a_time(
    base: list[Resource],
) -> None:
    hpa = one(base, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    (sockets,) = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    reference = (ROOT / "docs" / "reference.md").read_text()
    assert re.search(rf"^\| `{sockets['metric']['name']}` \| gauge", reference, re.M)
    settings = Settings.from_environ(environment(base))
    admitted = settings.web_concurrency * settings.max_connections_per_worker
    assert int(sockets["target"]["averageValue"]) <= 0.75 * admitted
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["metrics"])
    down = hpa["behavior"]["scaleDown"]
    assert down["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": down["policies"][0]["periodSeconds"]}
    ]
    assert down["policies"][0]["periodSeconds"] >= 60 and hpa["minReplicas"] >= 3
    assert "replicas" not in one(base, "Deployment", "gateway")["spec"], "the autoscaler owns the count"


def test_disruptions_and_rollouts_take_one_pod_at_a_time_spread_over_nodes(base: list[Resource]) -> None:
    deployment = one(base, "Deployment", "gateway")["spec"]
    assert deployment["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    budget = one(base, "PodDisruptionBudget", "gateway")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= pod_labels(base).items()
    keys = {c["topologyKey"] for c in pod_spec(base)["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in keys


def test_the_sysctl_patch_joins_the_pods_security_context(base: list[Resource], workspace: Path) -> None:
    """Applied, it adds the sysctls and keeps the rest; the base asks for none (a kubelet that does not
    allow them would refuse the pod)."""
    patched = pod_spec(rendered("unsafe-sysctls", workspace))["securityContext"]
    assert {s["name"] for s in patched["sysctls"]} == {"net.core.somaxconn", "net.ipv4.tcp_migrate_req"}
    assert patched == {**pod_spec(base)["securityContext"], "sysctls": patched["sysctls"]}
    assert "sysctls" not in pod_spec(base)["securityContext"]
