"""The socket's transport as the app sees it, and how the server hands it over.

The gateway's hot path bypasses ASGI ``send``: the server's WebSocket protocol
(gateway.server.protocol) is handed to the app as a ``Link`` that writes every queued frame in
one ``transport.write``, says when the transport can take more and calls back when it can again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol


class Link(Protocol):
    """The socket's transport, as the WebSocket protocol exposes it (gateway.server.protocol)."""

    last_activity: float
    on_writable: Callable[[], None] | None
    # Called with the number of pings and pongs in each read; False: stop reading, it is over.
    on_control: Callable[[int], bool] | None

    def can_write(self) -> bool: ...

    def is_closing(self) -> bool: ...

    def write_frames(self, payloads: list[bytes]) -> None: ...


# The server hands each socket's Link to the app in its ASGI scope. A scope is a plain dict with
# string keys, so the key is a string; only these two functions know it.
_LINK_EXTENSION = "gateway.link"


def offer_link(scope: Mapping[str, Any], link: Link) -> None:
    """For the server's protocol: hand ``link`` to the app serving ``scope``."""
    scope["extensions"][_LINK_EXTENSION] = link


def link_of(scope: Mapping[str, Any]) -> Link | None:
    """For the app: the Link its server handed over, or None under another server."""
    link: Link | None = scope["extensions"].get(_LINK_EXTENSION)
    return link
