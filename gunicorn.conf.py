"""gunicorn -c gunicorn.conf.py: the gateway's process model. Every setting comes from the environment."""

import os
import shutil
import sys
import tempfile

from gateway.settings import Settings, SettingsError

try:
    _settings = Settings.from_environ()
except SettingsError as exc:
    sys.stderr.write(f"gateway: invalid setting {exc}\n")
    raise SystemExit(2) from None

# Set before anything imports prometheus_client: it picks its multiprocess storage at import.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gateway-metrics-"))

_host = f"[{_settings.host}]" if ":" in _settings.host else _settings.host
bind = [f"{_host}:{_settings.port}"]
workers = _settings.web_concurrency
worker_class = "gateway.worker.GatewayWorker"
wsgi_app = "gateway.app:create_app()"
# Recycling a worker drops every socket it holds.
max_requests = 0
# Workers close their sockets with 1012 within the drain window; leave room to release leases.
graceful_timeout = int(_settings.drain_window) + 5
timeout = 30
keepalive = 5
# Each WebSocket holds a file descriptor; the default backlog is too small for reconnect storms.
backlog = 4096


def on_starting(server):  # type: ignore[no-untyped-def]
    """Empty the metrics directory: files of a previous run must not count."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
