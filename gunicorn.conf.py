"""gunicorn -c gunicorn.conf.py: the gateway's process model. Every setting comes from the environment."""

import logging
import os
import socket
import tempfile
import uuid

from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.config import table
from gateway.config.settings import Settings, SettingsError
from gateway.leases.dead_workers import LeaseReleaser
from gateway.ports import PortMap
from gateway.server.listeners import name_in_log, port_in_use
from gateway.server.upstream import exit_unless_compatible
from gateway.telemetry.log_format import fatal
from gateway.topology.modes import Topology

# The process's one Settings: the workers are built with it and build the app with it.
try:
    _settings = Settings.from_environ()
    _log_format = table.LOG_FORMAT.from_environ()
except SettingsError as exc:
    fatal(f"invalid setting {exc}")
    raise SystemExit(2) from None

# Names this master's workers in Redis, so child_exit can find a dead worker's leases. Each worker
# keeps the value it was forked with (pre_fork), though a reload sets a new one here.
os.environ["GATEWAY_INSTANCE_ID"] = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
# Set before anything imports prometheus_client: it picks its multiprocess storage at import.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gateway-metrics-"))
# Every upstream internal the gateway relies on is there, or one line and exit 2
# (gateway/server/upstream.py).
exit_unless_compatible()
# Only now: a missing upstream module stops start-up with the check's one line, not a traceback.
from gateway.server import resolving  # noqa: E402
from gateway.server.worker import GatewayWorker, hold_early_stop  # noqa: E402

# Every Redis connection of the master and its workers looks its host name up with a deadline:
# a resolver that stops answering costs refusals (1013), never a stop's grace period.
resolving.install()

# WEBSOCKET_PORT first, then METRICS_PORT and the dev console's port where they are on. Every
# worker serves them all (gateway/ports.py tells which path goes where).
_listeners = PortMap(_settings).all
bind = [listener.bind for listener in _listeners]
workers = _settings.web_concurrency
worker_class = GatewayWorker.with_settings(_settings)
# gunicorn insists on an app name; each worker builds it as create_app(_settings) instead
# (GatewayWorker.load_wsgi): the settings are read once, here.
wsgi_app = "gateway.app:create_app"
# Recycling a worker drops every socket it holds.
max_requests = 0
# Workers close their sockets with 1012 within the drain window, then need a few seconds for the
# last close frames and lease releases (gateway/drain.py and gateway/server/worker.py).
graceful_timeout = int(_settings.drain_window) + 10
timeout = 30
keepalive = 5
# Each WebSocket holds a file descriptor; the default backlog is too small for reconnect storms.
backlog = 4096
# Every worker binds its own listening socket after the fork, and the kernel spreads new
# connections over them (gateway/server/listeners.py says why and what it changes).
reuse_port = True
# Behind a load balancer: believe X-Forwarded-For only from these addresses or networks
# (comma separated); uvicorn takes the client address from it.
forwarded_allow_ips = table.FORWARDED_ALLOW_IPS.from_environ()
# No gunicornc control socket (gunicorn >= 25.1): nothing uses it, it could change the worker
# count behind the gateway's back, and its default path ($HOME/.gunicorn) is read-only or absent
# in the image (an ERROR at every start) and shared by every gunicorn of a user elsewhere: each
# master would replace the one before it and delete it on stop.
control_socket_disable = True
# LOG_FORMAT=json: every handler of gunicorn's logs writes JSON, and uvicorn's and the gateway's
# loggers write through those handlers (gateway/telemetry/log_format.py).
if _log_format == "json":
    logger_class = "gateway.telemetry.log_format.JsonLogger"

# Releases dead workers' leases off the master's loop (child_exit, on_exit).
_leases = LeaseReleaser(
    # One Redis, a Cluster or Sentinel's master, as the workers reach it.
    # One try each round: the releaser tries again itself.
    lambda: Topology.of(_settings).sync_client(
        socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    ),
    _settings.channel_prefix,
    _settings.lease_ttl,
    logging.getLogger("gunicorn.error"),
)
# Seconds the master's exit waits for them: a stop with no clients ends within 5 s whatever Redis does.
_LEASE_RELEASE_AT_EXIT = 2.0


def on_starting(server):  # type: ignore[no-untyped-def]
    """Refuse a port another process listens on; delete the metrics files of a previous run: they
    must not count."""
    name_in_log(server.log.error_log, bind)
    for listener in _listeners:
        problem = port_in_use(listener.host, listener.port)
        if problem is not None:
            fatal(f"{listener.variable} {listener.port} on {listener.host} is not free: {problem}")
            raise SystemExit(2)
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    # Only what prometheus_client and gateway/telemetry/metrics_archive.py write: a mistaken path (/tmp,
    # a directory shared with something else) must not be wiped.
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and name.endswith((".db", ".db.staging", ".archive.lock")):
            os.unlink(path)


def when_ready(server):  # type: ignore[no-untyped-def]
    server.log.info("Each worker listens on %s with SO_REUSEPORT", bind[0])


def pre_fork(server, worker):  # type: ignore[no-untyped-def]
    """Remember the instance id this worker is born with: a reload (HUP) runs this file again and
    names a new instance, but a worker keeps its id for life and child_exit must find its leases."""
    worker.gateway_instance_id = os.environ["GATEWAY_INSTANCE_ID"]


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    hold_early_stop(server, worker)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """A worker is gone, however it died: drop its live gauges, and queue its leases for release
    (gateway/leases/dead_workers.py): this hook runs in gunicorn's stop loop, so it never waits on Redis."""
    from prometheus_client import multiprocess

    from gateway import keys
    from gateway.telemetry.metrics_archive import archive_dead_worker

    multiprocess.mark_process_dead(worker.pid)
    archive_dead_worker(os.environ["PROMETHEUS_MULTIPROC_DIR"], worker.pid)
    _leases.add(keys.worker_id(worker.gateway_instance_id, worker.pid), worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    """The last step of a stop: a few seconds for the dead workers' leases, then they lapse."""
    _leases.finish(_LEASE_RELEASE_AT_EXIT)
