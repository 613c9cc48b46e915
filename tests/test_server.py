"""gateway/server: its list of upstream internals, the settings it hands the app, and imports
without cycles."""

from __future__ import annotations

import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import gateway
import gateway.server
from gateway.server.upstream import INTERNALS

ROOT = Path(__file__).resolve().parent.parent


def _documented() -> dict[str, set[str]]:
    """The package docstring's paragraphs that open with an upstream class: class -> names."""
    owners = {internal.owner.rpartition(":")[2].rpartition(".")[2] for internal in INTERNALS}
    documented: dict[str, set[str]] = {}
    for paragraph in (gateway.server.__doc__ or "").split("\n\n"):
        literals = re.findall(r"``([^`]+)``", paragraph)
        if literals and literals[0] in owners:
            documented.setdefault(literals[0], set()).update(literals[1:])
    return documented


def test_the_package_docstring_names_exactly_the_internals_upstream_py_checks() -> None:
    """Reading gateway/server/__init__.py tells every upstream internal in use: none missing
    from it, none left in it after upstream.py stopped checking it."""
    checked: dict[str, set[str]] = {}
    for internal in INTERNALS:
        owner = internal.owner.rpartition(":")[2].rpartition(".")[2]
        checked.setdefault(owner, set()).add(internal.name)
    assert _documented() == checked


def test_every_gateway_module_imports_on_its_own() -> None:
    """No import cycle: each module imported first, in a fresh interpreter, loads."""
    names = [
        m.name for m in pkgutil.walk_packages(gateway.__path__, "gateway.") if m.name != "gateway.__main__"
    ]
    assert "gateway.server.worker" in names
    script = (
        "import importlib, sys\n"
        "importlib.import_module(sys.argv[1])\n"
        # The master imports the worker class before prometheus_client may be imported.
        "assert sys.argv[1] != 'gateway.server.worker' or 'prometheus_client' not in sys.modules\n"
    )
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", script, name],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in names
    }
    failed = {}
    for name, process in processes.items():
        output, _ = process.communicate(timeout=60)
        if process.returncode != 0:
            failed[name] = output.strip().splitlines()[-1:]
    assert failed == {}


_WORKER_SCRIPT = """
import json, os
from gunicorn.config import Config
from gunicorn.glogging import Logger

import gateway.app
from gateway.server.worker import GatewayWorker
from gateway.config.settings import Settings

settings = Settings.from_environ()
built_with = []
gateway.app.create_app = lambda s: built_with.append(s) or object()

def read_again(*args, **kwargs):
    raise AssertionError("the environment was read again")

Settings.from_environ = read_again
cfg = Config()
result = {}
try:
    GatewayWorker(1, os.getpid(), [], None, 30, cfg, Logger(cfg))
except TypeError as exc:
    result["plain_class"] = str(exc)
worker = GatewayWorker.with_settings(settings)(1, os.getpid(), [], None, 30, cfg, Logger(cfg))
worker.load_wsgi()
result["app_got_the_settings"] = built_with == [settings]
result["ws_max_size"] = worker.config.ws_max_size
result["handshake_timeout"] = worker.config.http.handshake_timeout
print(json.dumps(result))
"""


def test_the_worker_and_the_app_get_the_settings_gunicorn_conf_read() -> None:
    """Settings are read from the environment once (gunicorn.conf.py); the worker class carries
    them, and the worker builds the app with them instead of either reading the environment."""
    env = {
        **os.environ,
        "JWT_SECRET_KEY": "x" * 64,
        "WEBSOCKET_MAX_MESSAGE_SIZE": "1234",
        "WEBSOCKET_HANDSHAKE_TIMEOUT": "7",
    }
    result = subprocess.run(
        [sys.executable, "-c", _WORKER_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert "with_settings" in found["plain_class"]
    assert found["app_got_the_settings"] is True
    assert found["ws_max_size"] == 1234
    assert found["handshake_timeout"] == 7.0
