"""The gateway started as deploy/kubernetes's pod starts it: the container's args (under the
image's tini in a cluster), its settings, its descriptor limit; then asked what the kubelet and
Prometheus ask, on the ports they name. Only the ports, Redis and the metrics directory are the
test's: a cluster gives the pod its own network and volumes."""

from __future__ import annotations

import os
import re
import resource
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.gateway_process import Gateway
from harness.ports import free_port
from harness.redis_server import RedisServer
from tests.kubernetes_manifests import container, container_port, environment, one, rendered
from tests.kustomize import Resource

# The soft descriptor limit containerd 2 gives a container: the args raise it to the hard limit.
RUNTIME_SOFT_LIMIT = 1024


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> list[Resource]:
    return rendered("base", tmp_path_factory.mktemp("kubernetes"))


@pytest.fixture(scope="module")
def pod(manifests: list[Resource], redis_server: RedisServer) -> Iterator[Gateway]:
    env = environment(manifests)
    # The test's: its Redis, free ports for the two the pod listens on, a fresh metrics directory.
    for name in ("REDIS_URL", "WEBSOCKET_PORT", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name)
    env["METRICS_PORT"] = str(free_port())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    gateway = Gateway(redis_server.url, int(env["WEB_CONCURRENCY"]), **env)
    args = container(manifests)["args"]

    def as_the_pod(argv: list[str]) -> list[str]:
        limit = f"resource.setrlimit(resource.RLIMIT_NOFILE, ({RUNTIME_SOFT_LIMIT}, hard))"
        start = "import os, resource, sys; hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
        return [sys.executable, "-c", f"{start}{limit}; os.execvp(sys.argv[1], sys.argv[1:])", *args]

    gateway.wrap = as_the_pod
    try:
        gateway.start()
        yield gateway
    except BaseException:
        sys.stderr.write(f"--- gateway log ---\n{gateway.log()[-5000:]}\n")
        raise
    finally:
        gateway.close()


def _port(manifests: list[Resource], pod: Gateway, name: str) -> int:
    """The test's port for the container port ``name``, by the setting whose value it is."""
    number = container_port(manifests, name)
    settings = environment(manifests)
    ports = {int(settings["WEBSOCKET_PORT"]): pod.port, int(settings["METRICS_PORT"]): pod.operational_port}
    return ports[number]


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_args_raise_the_descriptor_limit_and_become_gunicorn(pod: Gateway) -> None:
    """The shell execs: gunicorn's master is the process started, with soft limit = hard limit."""
    assert pod.process is not None
    limits = Path(f"/proc/{pod.process.pid}/limits").read_text()
    soft, hard = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.M).groups()  # type: ignore[union-attr]
    # The hard limit the container was given is this process's (the wrapper keeps it).
    given = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert int(soft) == int(hard) == given > RUNTIME_SOFT_LIMIT
    assert "gunicorn" in Path(f"/proc/{pod.process.pid}/cmdline").read_text()


@pytest.mark.parametrize("probe", ["startupProbe", "livenessProbe", "readinessProbe"])
def test_each_probe_answers_200_on_the_port_it_names(
    manifests: list[Resource], pod: Gateway, probe: str
) -> None:
    request = container(manifests)[probe]["httpGet"]
    assert _get(_port(manifests, pod, request["port"]), request["path"]) == 200


def test_prometheus_scrapes_the_metrics_port_and_clients_cannot(
    manifests: list[Resource], pod: Gateway
) -> None:
    (endpoint,) = one(manifests, "PodMonitor", "gateway")["spec"]["podMetricsEndpoints"]
    status, body = pod.get(endpoint["path"])
    assert _port(manifests, pod, endpoint["port"]) == pod.operational_port != pod.port
    assert status == 200 and b"websocket_active_connections" in body
    (service_port,) = one(manifests, "Service", "gateway")["spec"]["ports"]
    assert _get(_port(manifests, pod, service_port["targetPort"]), endpoint["path"]) == 404
