"""Preflight: what admission decides before it takes anything, without a Redis command.

origin -> query -> token -> draining -> capacity (the worker's; the user's places all held here;
a resume's budget). The answer is ``Cleared`` (who the handshake is and what it asked for) or
``Refused`` (the refusal and a detail for the log line); gateway/endpoint.py answers a refusal
and takes a cleared handshake on to its lease and subscription.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

from gateway import close_codes
from gateway.admission import query
from gateway.admission.auth import Authenticator, AuthError, Identity
from gateway.close_codes import Refusal
from gateway.config.settings import Settings
from gateway.history.recovery import Options, parse_options
from gateway.history.resume_budget import ResumeBudget
from gateway.hub import Hub


@dataclass(frozen=True, slots=True)
class Cleared:
    identity: Identity
    options: Options  # envelope, since


@dataclass(frozen=True, slots=True)
class Refused:
    refusal: Refusal
    detail: str  # why, for the log line (never the token)


class Preflight:
    """One per worker (gateway/state.py), over the parts whose counts it reads."""

    __slots__ = ("_authenticator", "_hub", "_resumes", "_settings")

    def __init__(
        self, settings: Settings, authenticator: Authenticator, hub: Hub, resumes: ResumeBudget
    ) -> None:
        self._settings = settings
        self._authenticator = authenticator
        self._hub = hub
        self._resumes = resumes

    def check(self, scope: Scope, draining: bool) -> Cleared | Refused:
        """The handshake's identity and options, or its refusal. Once the token is read, the scope
        keeps neither the request headers nor the query string."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if not origin_allowed(headers, self._settings.cors_origins):
            return Refused(close_codes.ORIGIN_FORBIDDEN, "origin not allowed")
        try:
            fields = query.parse(scope["query_string"])
        except query.MalformedQuery as exc:
            return Refused(close_codes.QUERY_INVALID, str(exc))
        try:
            identity = self._authenticator.authenticate(fields, headers)
        except AuthError as exc:
            return Refused(exc.refusal, str(exc))
        options = parse_options(fields)
        # Every open socket keeps its scope for life: the request headers and the query string
        # (with its token) are not needed past this point; dropping them saves about a kilobyte
        # per connection and keeps no token in memory.
        del headers[:]
        scope["query_string"] = b""
        refusal = self._capacity(identity.user_id, draining, options.since is not None)
        if refusal is not None:
            return Refused(refusal, refusal.meaning)
        return Cleared(identity, options)

    def _capacity(self, user_id: str, draining: bool, resuming: bool) -> Refusal | None:
        if draining:
            return close_codes.DRAINING
        if self._hub.connection_count >= self._settings.max_connections_per_worker:
            return close_codes.OVERLOADED
        if self._hub.count(user_id) >= self._settings.max_connections_per_user:
            # Every place of the user is held here: Redis could only answer 4029.
            return close_codes.USER_LIMIT
        if resuming and not self._resumes.allows(user_id):
            return close_codes.TOO_MANY_RESUMES
        return None


def origin_allowed(headers: list[tuple[bytes, bytes]], allowed: tuple[str, ...]) -> bool:
    """Exact match against CORS_ORIGINS. No Origin at all passes: browsers always send one, and
    a non-browser client could forge any value, so refusing it would protect nothing."""
    if not allowed:
        return True
    origins = [value.decode("latin-1") for name, value in headers if name == b"origin"]
    return not origins or (len(origins) == 1 and origins[0] in allowed)
