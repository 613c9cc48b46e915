"""The HTTP API for backends (gateway/api/): its keys, its body limit, and the history its
publishes write.

Rows of the one settings table (gateway/config/table.py), which orders them for docs/reference.md."""

from __future__ import annotations

from gateway.config.parsers import Parser, Setting, SettingsError, byte_size, integer, number

# Shorter secrets can be guessed offline from a leaked log of timing or brute-forced online.
MIN_KEY_LENGTH = 32


def _api_keys() -> Parser[tuple[str, ...]]:
    """Comma-separated secrets. An error names the variable and the key's place, never its text:
    start-up errors end up in logs."""

    def parse(name: str, raw: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
        if raw is None or not raw.strip():
            return default
        keys = [item.strip() for item in raw.split(",")]
        for place, key in enumerate(keys, start=1):
            where = f"key {place} of {len(keys)}"
            if len(key) < MIN_KEY_LENGTH:
                raise SettingsError(
                    f"{name}: {where} is {len(key)} characters; each key needs at least {MIN_KEY_LENGTH}"
                )
            if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
                raise SettingsError(f"{name}: {where} has a character other than printable ASCII")
        return tuple(dict.fromkeys(keys))

    return Parser(f"comma-separated secrets of at least {MIN_KEY_LENGTH} printable ASCII characters", parse)


WEBSOCKET_API_KEYS = Setting(
    "WEBSOCKET_API_KEYS",
    "api_keys",
    (),
    _api_keys(),
    "turns the HTTP API on (`/api/*`, docs/publishing.md): the secrets a backend may send as"
    " `Authorization: Bearer <key>` (several: rotate one at a time); unset, `/api/*` answers 404",
    shown="unset: API off",
)

WEBSOCKET_API_MAX_BODY_SIZE = Setting(
    "WEBSOCKET_API_MAX_BODY_SIZE",
    "api_max_body_size",
    4 * 1024 * 1024,
    byte_size(64 * 1024, 256 * 1024 * 1024),
    "largest request body the HTTP API reads (a batch of up to 1,000 messages included); beyond:"
    " 413 `body_too_large`, before any of it is parsed",
)

WEBSOCKET_API_HISTORY_LENGTH = Setting(
    "WEBSOCKET_API_HISTORY_LENGTH",
    "api_history_length",
    100,
    integer(1, 100_000),
    "entries a user's history keeps when the HTTP API writes it (the library's `history_length`)",
)

WEBSOCKET_API_HISTORY_TTL = Setting(
    "WEBSOCKET_API_HISTORY_TTL",
    "api_history_ttl",
    300.0,
    number(1.0, 604_800.0),
    "seconds a user's history lives when the HTTP API writes it (the library's `history_ttl`), and"
    " how long an idempotency key is remembered",
)
