"""What a resume (``?since=``) and a gap fill after a reconnect may replay.

Rows of the one settings table (gateway/config/table.py), which orders them for docs/reference.md."""

from __future__ import annotations

from gateway.config.parsers import Setting, byte_size, integer

WEBSOCKET_HISTORY_REPLAY_CAP = Setting(
    "WEBSOCKET_HISTORY_REPLAY_CAP",
    "history_replay_cap",
    100,
    integer(1, 10_000),
    "most history messages replayed to one resuming socket (`?since=`) or one user after a pub/sub"
    " reconnect; a longer gap is not recovered (`recovered:false`)",
)

WEBSOCKET_RESUMES_PER_MINUTE = Setting(
    "WEBSOCKET_RESUMES_PER_MINUTE",
    "resumes_per_minute",
    60,
    integer(1, 1_000_000),
    "resumes (`?since=`) one user may make on one worker per minute (a minute's worth at once, then"
    " evenly); beyond: 1013 `too_many_resumes`, before any Redis command",
)

WEBSOCKET_RESUME_BYTES_PER_MINUTE = Setting(
    "WEBSOCKET_RESUME_BYTES_PER_MINUTE",
    "resume_bytes_per_minute",
    64 * 1024 * 1024,
    byte_size(64 * 1024, 1 << 40),
    "bytes of history one user's resumes may read on one worker per minute, recovered or not (one"
    " resume may overdraw it; the next waits until it is paid back); beyond: 1013 `too_many_resumes`",
)
