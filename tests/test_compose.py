"""compose.yaml, the Dockerfile and deploy/: valid, complete, consistent with each other and the docs.

No Docker engine is needed: compose.yaml is checked against the Compose Specification's JSON schema
(a copy in tests/schemas/, with its license), and nginx checks its own configuration."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import pytest
import yaml

from harness.nginx import Nginx
from harness.paths import ROOT
from harness.ports import free_port

SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
GUNICORN_CONF = (ROOT / "gunicorn.conf.py").read_text()
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRETS = {
    "JWT_SECRET_KEY": "a-test-secret-of-enough-length-0123456789",
    "GRAFANA_ADMIN_PASSWORD": "test-only",
}


def load_yaml(relative: str) -> Any:
    return yaml.safe_load((ROOT / relative).read_text())


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and ${VAR?error}."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if not isinstance(node, str):
        return node

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op is not None and op.endswith("?") and missing:
            raise KeyError(f"{name}: {arg}")
        if op is not None and op.endswith("-") and missing:
            return str(arg)
        return value or ""

    return _VARIABLE.sub(one, node.replace("$$", "\0")).replace("\0", "$")


def variables(node: Any) -> Iterator[re.Match[str]]:
    if isinstance(node, dict):
        for value in node.values():
            yield from variables(value)
    elif isinstance(node, list):
        for value in node:
            yield from variables(value)
    elif isinstance(node, str):
        yield from _VARIABLE.finditer(node)


def bind_sources(service: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(host path, container path) of every bind mount, short or long syntax."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            if source.startswith((".", "/")):
                yield source, rest.split(":")[0]
        elif volume.get("type") == "bind":
            yield volume["source"], volume["target"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = load_yaml("compose.yaml")
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded = json.loads(SCHEMA.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_yaml_is_valid_against_the_compose_specification(
    compose: dict[str, Any], schema: dict[str, Any]
) -> None:
    """As written, and as compose sees it with .env.example and the two secrets filled in."""
    # The schema names draft 07 by an address jsonschema does not know: say it explicitly.
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    interpolated = interpolate(compose, {**env_example(), **SECRETS})
    for document in (compose, interpolated):
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)
        ]
        assert errors == []


def test_a_missing_secret_stops_compose_rather_than_defaulting(compose: dict[str, Any]) -> None:
    """Every secret is ${NAME:?...}: no default, and an empty value from .env.example is refused too."""
    for service in compose["services"].values():
        for name, value in service.get("environment", {}).items():
            if re.search(r"SECRET|PASSWORD|TOKEN", name):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name} = {value!r}"
    for name in SECRETS:
        assert env_example()[name] == "", f".env.example must not carry a value for {name}"
        with pytest.raises(KeyError, match=name):
            interpolate(compose, {**env_example(), **{k: v for k, v in SECRETS.items() if k != name}})


def test_env_example_documents_every_variable_compose_reads(compose: dict[str, Any]) -> None:
    documented = env_example()
    used = {match["name"] for match in variables(compose)}
    assert used <= documented.keys(), f"missing from .env.example: {sorted(used - documented.keys())}"


def test_every_file_compose_mounts_or_builds_from_exists(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in compose["services"].items():
        for source, _ in bind_sources(service):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            checked += 1
        build = service.get("build")
        if isinstance(build, dict):
            context = ROOT / build.get("context", ".")
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: no Dockerfile"
            if "target" in build:
                dockerfile = (context / build.get("dockerfile", "Dockerfile")).read_text()
                assert re.search(rf"^FROM \S+ AS {build['target']}$", dockerfile, re.M), build["target"]
        for env_file in service.get("env_file", []):
            path = env_file if isinstance(env_file, str) else env_file["path"]
            assert (ROOT / path).is_file(), f"{name} reads {path}, which does not exist"
    assert checked >= 5


def test_the_stack_is_redis_two_gateway_replicas_nginx_prometheus_grafana_and_locust(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert "healthcheck" in services["redis"]
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] == 2
    assert "WEB_CONCURRENCY" in gateway["environment"]
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    # gunicorn's graceful_timeout (the 10 s drain window plus a margin) must end before docker's SIGKILL.
    margin = re.search(r"^graceful_timeout = int\(_settings\.drain_window\) \+ (\d+)$", GUNICORN_CONF, re.M)
    assert margin is not None, (
        "gunicorn.conf.py: graceful_timeout is no longer the drain window plus a margin"
    )
    assert gateway["stop_signal"] == "SIGTERM"
    assert int(gateway["stop_grace_period"].removesuffix("s")) > 10 + int(margin[1])
    assert "ports" not in gateway, "replicas are reached through the load balancer only"

    lb = services["lb"]
    assert ("./deploy/nginx.conf", "/etc/nginx/nginx.conf") in set(bind_sources(lb))
    assert any(port.endswith(":8080") for port in lb["ports"])
    # The gateway believes X-Forwarded-For from the load balancer's fixed address, and only from it.
    lb_address = ipaddress.ip_address(lb["networks"]["default"]["ipv4_address"])
    subnet = ipaddress.ip_network(compose["networks"]["default"]["ipam"]["config"][0]["subnet"])
    assert lb_address in subnet
    assert gateway["environment"]["FORWARDED_ALLOW_IPS"] == str(lb_address)

    assert {"./deploy/prometheus.yml", "./deploy/prometheus/alerts.yml"} <= {
        source for source, _ in bind_sources(services["prometheus"])
    }
    assert {"./deploy/grafana/provisioning", "./deploy/grafana/dashboards"} <= {
        source for source, _ in bind_sources(services["grafana"])
    }
    assert "publisher" in services
    loadtest = {name for name, service in services.items() if "loadtest" in service.get("profiles", [])}
    assert loadtest == {"locust-master", "locust-worker"}
    assert "--master" in services["locust-master"]["command"]
    assert "--worker" in services["locust-worker"]["command"]


def test_prometheus_finds_every_replica_and_grafana_every_dashboard(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = load_yaml("deploy/prometheus.yml")
    (job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "gateway"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["gateway"] and discovery["port"] == 8080
    mounted = {target for _, target in bind_sources(services["prometheus"])}
    assert set(prometheus["rule_files"]) <= mounted

    grafana_mounts = dict(bind_sources(services["grafana"]))
    (provider,) = load_yaml("deploy/grafana/provisioning/dashboards/gateway.yml")["providers"]
    assert grafana_mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    (datasource,) = load_yaml("deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/gateway.json").read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]


def documented_metrics() -> set[str]:
    reference = (ROOT / "docs" / "reference.md").read_text()
    table = reference.partition("## Metrics")[2].partition("\n## ")[0]
    return set(re.findall(r"^\| `(websocket_[a-z_]+)` \|", table, re.M))


def test_alerts_and_dashboard_use_only_the_documented_metrics() -> None:
    known = documented_metrics()
    assert len(known) >= 9
    expressions = [
        rule["expr"]
        for group in load_yaml("deploy/prometheus/alerts.yml")["groups"]
        for rule in group["rules"]
    ]
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/gateway.json").read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for e in expressions
        for name in re.findall(r"websocket_\w+", e)
    }
    assert used and used <= known, f"not in docs/reference.md's Metrics table: {sorted(used - known)}"


def test_the_dockerfile_builds_a_non_root_image_that_drains_on_sigterm() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", dockerfile, re.M)
    assert len(stages) >= 2 and "slim" in re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)[1]  # type: ignore[index]
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    runtime = dockerfile.partition("AS runtime")[2].partition("\nFROM ")[0]
    (runtime_user,) = re.findall(r"^USER (\S+)$", runtime, re.M)
    assert runtime_user.split(":")[0] not in ("0", "root") and users[-1] == runtime_user
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", runtime, re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM$", runtime, re.M)
    assert re.search(r'^CMD \["gunicorn", "-c", "gunicorn.conf.py"\]$', runtime, re.M)
    # An init as PID 1 forwards an early SIGTERM (tests/e2e/test_early_sigterm.py runs it).
    assert re.search(r'^ENTRYPOINT \["tini", "--"\]$', runtime, re.M)
    assert "apt-get install -y --no-install-recommends tini" in runtime
    # Dependencies come from the hashed runtime lock, then the project without resolving again.
    assert "pip install --require-hashes -r /src/requirements-runtime.lock" in dockerfile
    assert (
        "COPY pyproject.toml" in dockerfile
        and "pip install --no-deps --no-build-isolation /src" in dockerfile
    )


def test_nginx_accepts_the_load_balancer_configuration() -> None:
    """``nginx -t`` on deploy/nginx.conf, with the compose service name replaced by loopback upstreams."""
    nginx = Nginx([free_port(), free_port()])
    try:
        result = nginx.check()
        assert result.returncode == 0, result.stderr
        assert "test is successful" in result.stderr
    finally:
        nginx.close()


def test_nginx_proxies_websockets_with_long_timeouts_and_the_client_address() -> None:
    text = (ROOT / "deploy/nginx.conf").read_text()
    ws = text.partition("location = /ws {")[2].partition("}")[0]
    assert "proxy_http_version 1.1;" in ws
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in ws
    (read_timeout,) = re.findall(r"proxy_read_timeout (\d+)s;", ws)
    assert int(read_timeout) > 300, "longer than the gateway's idle timeout and ping interval"
    directives = "\n".join(line.partition("#")[0] for line in text.splitlines())
    leaks = re.findall(r"\$(?:request|request_uri|args|query_string|arg_\w+)(?!\w)", directives)
    assert leaks == [], "these would put tokens in the access log"


def test_the_cluster_profile_adds_a_redis_cluster_and_a_gateway_on_it_and_changes_nothing_else(
    compose: dict[str, Any],
) -> None:
    """`docker compose up` runs what it ran before; `--profile cluster` adds six cluster nodes on
    fixed addresses, the one-shot create over all of them, and a gateway whose REDIS_CLUSTER_NODES
    name cluster nodes and which starts only once the cluster is created."""
    from gateway.topology.modes import Topology

    services = compose["services"]
    default = {name for name, service in services.items() if not service.get("profiles")}
    assert default == {"redis", "gateway", "lb", "prometheus", "grafana", "publisher"}
    cluster = {name for name, service in services.items() if "cluster" in service.get("profiles", [])}
    nodes = {name for name in cluster if re.fullmatch(r"redis-cluster-\d", name)}
    assert cluster == nodes | {"redis-cluster-create", "gateway-cluster"} and len(nodes) == 6

    subnet = ipaddress.ip_network(compose["networks"]["default"]["ipam"]["config"][0]["subnet"])
    fixed = [
        service["networks"]["default"]["ipv4_address"]
        for service in services.values()
        if "ipv4_address" in service.get("networks", {}).get("default", {})
    ]
    assert len(fixed) == len(set(fixed)), "two services on one fixed address"
    addresses = {services[name]["networks"]["default"]["ipv4_address"] for name in nodes}
    assert all(ipaddress.ip_address(a) in subnet for a in addresses)
    for name in nodes:
        command = services[name]["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert "healthcheck" in services[name]

    create = services["redis-cluster-create"]
    script = create["command"][0]
    assert set(re.findall(r"(\d+\.\d+\.\d+\.\d+):6379", script.partition("--cluster create")[2])) == addresses
    assert "--cluster-replicas 1" in script and "--cluster-yes" in script
    assert {n: c["condition"] for n, c in create["depends_on"].items()} == dict.fromkeys(
        nodes, "service_healthy"
    )

    gateway = services["gateway-cluster"]
    topology = Topology.from_environ(interpolate(gateway["environment"], {**env_example(), **SECRETS}))
    assert topology.mode == "cluster"
    assert {host for host, port in topology.cluster_nodes} <= addresses
    assert gateway["depends_on"]["redis-cluster-create"]["condition"] == "service_completed_successfully"
    assert gateway["image"] == services["gateway"]["image"]
    assert set(services["gateway"]["environment"]) - {"FORWARDED_ALLOW_IPS"} <= set(gateway["environment"])
