"""gunicorn's configuration for ``harness.echo_gateway``: the gateway's worker and settings, one
worker, the echo app."""

from gateway.config.settings import Settings
from harness.echo_gateway import EchoWorker

_settings = Settings.from_environ()
bind = [f"{_settings.host}:{_settings.port}"]
workers = 1
worker_class = EchoWorker.with_settings(_settings)
wsgi_app = "harness.echo_gateway:echo_app"
max_requests = 0
control_socket_disable = True
