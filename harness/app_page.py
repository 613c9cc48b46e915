"""The web app a browser test loads: a blank page, the JavaScript client module at
``/gateway-client.js``, and a token endpoint ``/token?user=U[&ttl=S][&forged=1][&groups=A,B]``, as a real app
serves them. Its origin is not the gateway's, as in production."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from harness.paths import ROOT
from harness.ports import free_port
from harness.tokens import SECRET, make_token

CLIENT_MODULE = ROOT / "clients" / "js" / "src" / "index.js"
FORGERS_SECRET = "not-the-gateway-secret-but-just-as-long-0123456789-0123456789-abcd"
_PAGE = b"<!doctype html><meta charset=utf-8><title>app</title>"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/":
            self._answer(200, "text/html; charset=utf-8", _PAGE)
        elif url.path == "/gateway-client.js":
            # Read per request: a test run sees the module as it is on disk.
            self._answer(200, "text/javascript; charset=utf-8", CLIENT_MODULE.read_bytes())
        elif url.path == "/token":
            query = parse_qs(url.query)
            user, ttl = query["user"][0], float(query.get("ttl", ["3600"])[0])
            # forged=1: a well-formed token signed with a key the gateway does not know.
            secret = FORGERS_SECRET if query.get("forged") == ["1"] else SECRET
            # groups=a,b: the token's groups claim.
            groups = query["groups"][0].split(",") if "groups" in query else None
            with self.server.lock:
                self.server.tokens_issued[user] = self.server.tokens_issued.get(user, 0) + 1
            token = make_token(user, ttl=ttl, secret=secret, groups=groups)
            self._answer(200, "text/plain", token.encode())
        else:
            self._answer(404, "text/plain", b"not found")

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.lock = threading.Lock()
        self.tokens_issued: dict[str, int] = {}


class AppPage:
    """``url``: the page (origin ``http://127.0.0.1:<port>``); ``other_origin_url``: the same page
    from ``http://localhost:<port>``, another origin, for Origin checks."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server = _Server(self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="app-page", daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/"

    @property
    def other_origin_url(self) -> str:
        return f"http://localhost:{self.port}/"

    def tokens_issued(self, user: str) -> int:
        with self._server.lock:
            return self._server.tokens_issued.get(user, 0)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@contextlib.contextmanager
def serving_app_page() -> Iterator[AppPage]:
    page = AppPage()
    page.start()
    try:
        yield page
    finally:
        page.close()
