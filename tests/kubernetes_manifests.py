"""deploy/kubernetes as the tests read it: each way of applying it rendered (tests/kustomize.py),
and the parts of its objects the checks look at."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from harness.paths import ROOT
from tests.kustomize import Resource, env_file, render

KUBERNETES = ROOT / "deploy" / "kubernetes"
SECRET = "a-test-secret-of-enough-length-0123456789"
# What `kubectl apply -k` is run on: the folder, and a patch the docs tell to add.
VARIANTS = {
    "base": ("", None),
    "cluster": ("overlays/cluster", None),
    "sentinel": ("overlays/sentinel", None),
    "unsafe-sysctls": ("", "patches/unsafe-sysctls.yaml"),
    "redis": ("redis", None),
}


def rendered(variant: str, workspace: Path) -> list[Resource]:
    """The objects of one variant, from a copy of deploy/kubernetes with secret.env filled in."""
    folder, extra_patch = VARIANTS[variant]
    # A copy of its own: a variant's patch must not reach the others.
    copy = workspace / variant
    if not copy.exists():
        shutil.copytree(KUBERNETES, copy)
        example = (copy / "secret.env.example").read_text()
        (copy / "secret.env").write_text(example.replace("JWT_SECRET_KEY=\n", f"JWT_SECRET_KEY={SECRET}\n"))
    if extra_patch is not None:
        kustomization = copy / "kustomization.yaml"
        text = kustomization.read_text()
        if extra_patch not in text:
            kustomization.write_text(f"{text}patches:\n  - path: {extra_patch}\n")
    return render(copy / folder)


def one(resources: list[Resource], kind: str, name: str) -> Resource:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def pod_spec(resources: list[Resource]) -> dict[str, Any]:
    spec: dict[str, Any] = one(resources, "Deployment", "gateway")["spec"]["template"]["spec"]
    return spec


def container(resources: list[Resource]) -> dict[str, Any]:
    (gateway,) = [c for c in pod_spec(resources)["containers"] if c["name"] == "gateway"]
    return gateway


def environment(resources: list[Resource]) -> dict[str, str]:
    """The gateway container's variables, as the kubelet sets them: envFrom in order (a later
    source wins), then env; Secret values decoded."""
    env: dict[str, str] = {}
    for source in container(resources)["envFrom"]:
        if "configMapRef" in source:
            env |= one(resources, "ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            data = one(resources, "Secret", source["secretRef"]["name"])["data"]
            env |= {key: base64.b64decode(value).decode() for key, value in data.items()}
    env |= {item["name"]: item["value"] for item in container(resources).get("env", [])}
    return env


def variables_written() -> set[str]:
    """Every variable name the manifests could set: ConfigMap keys of every variant and patch,
    the container's env, and the keys secret.env.example has."""
    names = set(env_file(KUBERNETES / "secret.env.example"))
    for path in KUBERNETES.rglob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, Mapping) and document.get("kind") == "ConfigMap":
                if document["metadata"]["name"] == "gateway-settings":
                    names |= set(document.get("data", {}))
            if isinstance(document, Mapping) and document.get("kind") == "Deployment":
                for item in document["spec"]["template"]["spec"].get("containers", []):
                    names |= {variable["name"] for variable in item.get("env", [])}
    return names


def container_port(resources: list[Resource], name: str) -> int:
    (port,) = [p["containerPort"] for p in container(resources)["ports"] if p["name"] == name]
    return int(port)
