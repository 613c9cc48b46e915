"""What the server answers, before any app code runs, to a request it will not serve: a head over
a limit, an upgrade RFC 6455 forbids, a worker out of descriptors, a pipeline too deep.

These apply on every path (``/ws``, ``/healthz``, ``/metrics``, ``/api/*``), as the HTTP parser
reads the request (gateway.server.http). The limits sit inside those of the WebSocket handshake's
own parser (websockets: 8 KiB per line, 128 headers), so an upgrade meets the same limits as any
request. The table in docs/reference.md is generated from ``ALL``.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_TARGET_BYTES = 8_000
MAX_HEADER_BYTES = 8_000
MAX_HEADERS = 100
MAX_HEAD_BYTES = 64 * 1024
# Requests one connection may have waiting (pipelined) behind the one being answered.
MAX_PIPELINED = 16
# Descriptors a worker keeps for itself (Redis reconnects, metric files, logs): past its soft
# RLIMIT_NOFILE minus these, a new connection is answered 503 instead of served.
DESCRIPTOR_RESERVE = 64


@dataclass(frozen=True, slots=True)
class HttpRefusal:
    reason: str  # the response's body and the log line's label
    status: int | None  # None: not an error status (see ``answer``)
    answer: str
    meaning: str


def _status(reason: str, status: int, meaning: str) -> HttpRefusal:
    return HttpRefusal(reason, status, f"HTTP {status}, then the connection closes", meaning)


TARGET_TOO_LONG = _status(
    "request_target_too_long", 414, f"the request target (path and query) is over {MAX_TARGET_BYTES:,} bytes"
)
HEADER_TOO_LARGE = _status(
    "header_too_large", 431, f"one header (name and value) is over {MAX_HEADER_BYTES:,} bytes"
)
TOO_MANY_HEADERS = _status("too_many_headers", 431, f"more than {MAX_HEADERS} headers")
HEAD_TOO_LARGE = _status(
    "head_too_large",
    431,
    f"the request line and headers are over {MAX_HEAD_BYTES // 1024} KiB together",
)
BAD_UPGRADE = _status(
    "bad_upgrade", 400, "a WebSocket upgrade over HTTP/1.0, or without a Host header (RFC 6455 4.1)"
)
NO_DESCRIPTORS = _status(
    "no_descriptors",
    503,
    f"the worker is within {DESCRIPTOR_RESERVE} descriptors of its soft RLIMIT_NOFILE (one log line "
    "at most every 10 s says so); retry, another worker or host may take it",
)
TRAILERS_TOO_LARGE = HttpRefusal(
    "trailers_too_large",
    None,
    "the connection closes (the request's answer may be out already)",
    f"a chunked body's trailer section is over {MAX_HEAD_BYTES // 1024} KiB",
)
PIPELINE_TOO_DEEP = HttpRefusal(
    "pipeline_too_deep",
    None,
    f"the answer to the {MAX_PIPELINED + 1}th request carries `Connection: close`; the rest are not read",
    f"more than {MAX_PIPELINED} requests pipelined behind the one being answered; retry them on a new "
    "connection (RFC 9112 9.3.2)",
)

ALL: tuple[HttpRefusal, ...] = (
    TARGET_TOO_LONG,
    HEADER_TOO_LARGE,
    TOO_MANY_HEADERS,
    HEAD_TOO_LARGE,
    BAD_UPGRADE,
    NO_DESCRIPTORS,
    TRAILERS_TOO_LARGE,
    PIPELINE_TOO_DEEP,
)


def markdown_table() -> str:
    """The table of HTTP refusals in docs/reference.md, so the two cannot drift apart."""
    rows = ["| reason | answer | when |", "|---|---|---|"]
    rows += [f"| `{r.reason}` | {r.answer} | {r.meaning} |" for r in ALL]
    return "\n".join(rows)
