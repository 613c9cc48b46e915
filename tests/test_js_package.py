"""The JS client is an npm package as users install one: ``npm pack`` makes a tarball with the
module, its declarations, README and LICENSE; installed into a scratch project (offline: it has
no dependencies) it imports from Node by its name and type-checks from TypeScript."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from harness.paths import ROOT

CLIENT = ROOT / "clients" / "js"
PACKAGE = json.loads((CLIENT / "package.json").read_text())
NAME = PACKAGE["name"]


def _run(command: list[str], cwd: Path, home: Path) -> str:
    # Its own npm cache and config, offline: the registry is never asked.
    env = {
        "PATH": str(Path(shutil.which("node") or "/usr/bin/node").parent) + ":/usr/bin:/bin",
        "HOME": str(home),
        "npm_config_cache": str(home / "npm-cache"),
        "npm_config_offline": "true",
        "npm_config_update_notifier": "false",
    }
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch project with the packed tarball installed; its directory."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("node and npm are not installed")
    home = tmp_path_factory.mktemp("npm-home")
    packed = tmp_path_factory.mktemp("packed")
    report = json.loads(_run(["npm", "pack", "--json", "--pack-destination", str(packed)], CLIENT, home))
    tarball = packed / report[0]["filename"]
    with tarfile.open(tarball) as archive:
        names = sorted(archive.getnames())
    shipped = ("package.json", "README.md", "LICENSE", "src/index.js", "src/index.d.ts")
    assert names == sorted(f"package/{name}" for name in shipped)
    app = tmp_path_factory.mktemp("app")
    (app / "package.json").write_text(json.dumps({"name": "app", "private": True, "type": "module"}))
    _run(["npm", "install", str(tarball), "--offline", "--no-audit", "--no-fund"], app, home)
    return app


def _node(app: Path, script: str) -> str:
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script], cwd=app, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_installed_package_imports_by_its_name_in_node(installed: Path) -> None:
    script = f"""
import {{ GatewayClient }} from "{NAME}";
class FakeSocket {{ constructor(url, protocols) {{ FakeSocket.made = [url, protocols]; }} }}
const options = {{ getToken: () => "a.b.c", WebSocket: FakeSocket }};
const client = new GatewayClient("ws://gateway.example/ws", options);
console.log(JSON.stringify([typeof GatewayClient, client.state, client.position]));
"""
    assert json.loads(_node(installed, script)) == ["function", "closed", None]


def test_without_a_websocket_constructor_the_client_says_so(installed: Path) -> None:
    """Node before 22 has no global WebSocket: the constructor names what is missing."""
    script = f"""
import {{ GatewayClient }} from "{NAME}";
delete globalThis.WebSocket;
try {{ new GatewayClient("ws://gateway.example/ws", {{ getToken: () => "a.b.c" }}); console.log("built"); }}
catch (error) {{ console.log(error.name + ": " + error.message); }}
"""
    out = _node(installed, script)
    assert out.startswith("TypeError: GatewayClient: no WebSocket constructor") and "options.WebSocket" in out


def test_the_installed_package_type_checks_from_typescript(installed: Path) -> None:
    tsc = shutil.which("tsc")
    if tsc is None:
        pytest.skip("tsc is not installed (npx -p typescript@5 tsc -p clients/js/types checks it)")
    shutil.copy(CLIENT / "types" / "usage.ts", installed / "usage.ts")
    shutil.copy(CLIENT / "types" / "tsconfig.json", installed / "tsconfig.json")
    result = subprocess.run([tsc, "-p", "."], cwd=installed, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_packages_carry_the_repositorys_license() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == PACKAGE["license"] == "BSD-3-Clause"
    assert pyproject["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License") and "Neither the name of the copyright holder" in text
    assert (CLIENT / "LICENSE").read_text() == text, "the npm package ships a copy: keep them equal"


def test_the_package_is_es_module_only_with_types_first() -> None:
    """`types` first in the export conditions, or TypeScript's resolution picks `default`."""
    assert PACKAGE["type"] == "module" and list(PACKAGE["exports"]["."]) == ["types", "default"]
    assert "private" not in PACKAGE and PACKAGE["files"], "packable, and only what a user needs"
