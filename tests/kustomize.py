"""``kubectl kustomize`` for deploy/kubernetes, without kubectl: the few features its files use.

A kustomization here may name ``resources`` (files, or folders with their own kustomization),
``secretGenerator`` (``envs`` files, with ``disableNameSuffixHash``) and ``patches`` (strategic-merge
patch files, each naming the object it patches). Any other field, or a patch that needs list merge
keys, raises ``Unsupported``: a file must never mean something here that kustomize reads otherwise.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

_FIELDS = {"apiVersion", "kind", "resources", "secretGenerator", "patches"}
# Lists that strategic merge joins by a key (containers by name, ...): replacing them, as this
# renderer does with every list, would drop what the base has.
_KEYED_LISTS = {
    "containers",
    "initContainers",
    "volumes",
    "volumeMounts",
    "env",
    "envFrom",
    "ports",
    "imagePullSecrets",
    "tolerations",
    "topologySpreadConstraints",
}


class Unsupported(ValueError):
    """The kustomization uses something this renderer does not do as kustomize does."""


def render(folder: Path) -> list[Resource]:
    """The objects ``kubectl apply -k folder`` would send, in order."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _FIELDS
    if unknown:
        raise Unsupported(f"{folder}: kustomization fields {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = folder / entry
        if path.is_dir():
            resources += render(path)
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for generator in kustomization.get("secretGenerator", []):
        resources.append(_secret(folder, generator))
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise Unsupported(f"{folder}: patch {patch}: only `path` (a strategic-merge patch file)")
        _apply(resources, yaml.safe_load((folder / patch["path"]).read_text()))
    names = [identity(resource) for resource in resources]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{folder}: the same object twice: {duplicates}")
    return resources


def identity(resource: Mapping[str, Any]) -> tuple[str, str, str]:
    return resource["apiVersion"], resource["kind"], resource["metadata"]["name"]


def env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines as kustomize reads an ``envs`` file; comments and blank lines skipped."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, separator, value = line.partition("=")
            if not separator:
                raise ValueError(f"{path}: {line!r} is not NAME=value")
            pairs[name.strip()] = value
    return pairs


def _secret(folder: Path, generator: Mapping[str, Any]) -> Resource:
    if set(generator) - {"name", "envs", "options"} or generator.get("options") != {
        "disableNameSuffixHash": True
    }:
        raise Unsupported(f"{folder}: secretGenerator {generator}: only name, envs and a fixed name")
    data: dict[str, str] = {}
    for name in generator["envs"]:
        for key, value in env_file(folder / name).items():
            data[key] = base64.b64encode(value.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": generator["name"]},
        "type": "Opaque",
        "data": data,
    }


def _apply(resources: list[Resource], patch: Resource) -> None:
    targets = [r for r in resources if identity(r) == identity(patch)]
    if not targets:
        raise ValueError(f"a patch for {identity(patch)}, which is not among the resources")
    _merge(targets[0], patch, ())


def _merge(target: dict[str, Any], patch: Mapping[str, Any], path: tuple[str, ...]) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise Unsupported(f"patch directive {key} at {'.'.join(path) or 'the top'}")
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value, (*path, key))
        elif isinstance(value, list) and key in _KEYED_LISTS:
            raise Unsupported(f"patching {'.'.join((*path, key))}: a list strategic merge joins by key")
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = value
