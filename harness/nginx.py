"""Debian's nginx running the repository's load-balancer config (deploy/nginx.conf) for the tests.

Only what cannot be the same here is rewritten: the listen address and port, the upstream servers
(the test's gunicorn "hosts" instead of the compose service name), Docker's resolver, and the
log and temporary paths. Every proxy setting is the file's own.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from harness.paths import ROOT
from harness.ports import free_port
from harness.process_tree import stop_then_kill
from harness.waiting import wait_for

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
_UPSTREAM_SERVER = re.compile(r"^(?P<indent>[ \t]*)server gateway:8080 resolve(?P<params>[^;]*);$", re.M)


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def _substitute(pattern: str, replacement: str, text: str) -> str:
    """re.sub that insists the repository's file still has the line it rewrites, exactly once."""
    result, count = re.subn(pattern, replacement, text, flags=re.M)
    if count != 1:
        raise AssertionError(f"deploy/nginx.conf: expected one line matching {pattern!r}, found {count}")
    return result


# (listen port, upstream ports, prefix for logs and temporary files) -> nginx.conf's text.
Renderer = Callable[[int, Sequence[int], Path], str]


def _temp_paths(prefix: Path) -> str:
    return "".join(
        f"    {kind}_temp_path {prefix}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def render_config(listen_port: int, upstream_ports: Sequence[int], prefix: Path) -> str:
    """deploy/nginx.conf with loopback ports, the given upstreams and paths under ``prefix``."""
    text = NGINX_CONF.read_text()
    text = _substitute(r"^([ \t]*)listen 8080;$", rf"\g<1>listen 127.0.0.1:{listen_port};", text)
    match = _UPSTREAM_SERVER.search(text)
    if match is None or len(_UPSTREAM_SERVER.findall(text)) != 1:
        raise AssertionError("deploy/nginx.conf: expected one `server gateway:8080 resolve ...;` upstream")
    servers = "\n".join(
        f"{match['indent']}server 127.0.0.1:{port}{match['params']};" for port in upstream_ports
    )
    text = text[: match.start()] + servers + text[match.end() :]
    # Docker's embedded DNS is not here, and nothing is left to resolve.
    text = _substitute(r"^[ \t]*resolver [^;]*;\n", "", text)
    text = _substitute(
        r"^([ \t]*)access_log /dev/stdout gateway;$", rf"\g<1>access_log {prefix}/access.log gateway;", text
    )
    return _substitute(r"^http \{\n", "http {\n" + _temp_paths(prefix), text)


def proxy_config(location: str) -> Renderer:
    """Not the repository's file: a plain proxy to the first upstream port, whose one location
    holds ``location`` (the proxy settings a test wants) besides its ``proxy_pass``."""

    def render(listen_port: int, upstream_ports: Sequence[int], prefix: Path) -> str:
        return (
            "events {}\n"
            "http {\n"
            f"{_temp_paths(prefix)}"
            f"    access_log {prefix}/access.log;\n"
            "    server {\n"
            f"        listen 127.0.0.1:{listen_port};\n"
            "        location / {\n"
            f"            proxy_pass http://127.0.0.1:{upstream_ports[0]};\n"
            f"            {location}\n"
            "        }\n"
            "    }\n"
            "}\n"
        )

    return render


class Nginx:
    """A non-daemon nginx on a free loopback port in front of the given upstream ports, running
    deploy/nginx.conf unless another ``render`` is given."""

    def __init__(self, upstream_ports: Sequence[int], render: Renderer = render_config) -> None:
        binary = nginx_binary()
        if binary is None:
            raise AssertionError("nginx not found: run scripts/ensure-nginx (Debian's nginx-light)")
        self.binary = binary
        self.port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="gateway-nginx-"))
        # Workers run as nobody when the master is root: they must reach the temp paths.
        self.prefix.chmod(0o755)
        self.config = self.prefix / "nginx.conf"
        self.config.write_text(render(self.port, upstream_ports, self.prefix))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _command(self, *extra: str) -> list[str]:
        directives = f"daemon off; pid {self.prefix}/nginx.pid;"
        error_log = str(self.prefix / "error.log")
        return [
            self.binary,
            "-p",
            str(self.prefix),
            "-c",
            str(self.config),
            "-e",
            error_log,
            "-g",
            directives,
            *extra,
        ]

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the rendered configuration."""
        return subprocess.run(self._command("-t"), capture_output=True, text=True, timeout=30, check=False)

    def start(self) -> None:
        with open(self.prefix / "stdout.log", "ab") as log:
            self.process = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._listening, timeout=10, what="nginx to listen")

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"nginx exited with {self.process.returncode}:\n{self.log()}")
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def access_log(self) -> str:
        path = self.prefix / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            # SIGTERM is nginx's fast shutdown: it does not wait for open WebSockets.
            stop_then_kill(self.process, 10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)


@contextmanager
def running_nginx(upstream_ports: Sequence[int], render: Renderer = render_config) -> Iterator[Nginx]:
    nginx = Nginx(upstream_ports, render)
    try:
        nginx.start()
        yield nginx
    except BaseException:
        print(f"--- nginx log ---\n{nginx.log()[-5000:]}")
        raise
    finally:
        nginx.close()
