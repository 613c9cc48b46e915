"""``?envelope=1`` and ``?since=<position>``: what a socket asked for, and its resume.

A resume reads the user's history after the position once the user's channel is subscribed
(admission confirmed it), so whatever is published from then on also arrives live and waits in
the socket's outbox, unsent until the accept. The recovery frame and the replayed messages go
first; a live message the replay already carried is dropped, so none is missing or doubled.
A bad position (garbage, truncated, huge, another epoch or user, the future) is answered
``recovered:false`` with nothing replayed; only the authenticated user's own keys are read. One of
an epoch the history forked from after a failover replays from the last offset both share.
An entry whose envelope is over the bound of a queued frame (``envelope.fits``) is dropped and
counted like a live one; ``replayed`` counts the frames that follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

from gateway import close_codes, drops
from gateway.close_codes import Refusal
from gateway.history import envelope
from gateway.history.position import Position, format_position, parse_position
from gateway.history.reader import HistoryReader
from gateway.history.resume_budget import ResumeBudget
from gateway.telemetry import metrics
from gateway.topology.modes import UNAVAILABLE


class Options(NamedTuple):
    envelope: bool
    since: str | None


def parse_options(query: Mapping[str, str]) -> Options:
    """The socket's mode from its query (gateway/admission/query.py); ``since`` implies envelope mode."""
    since = query.get("since")
    return Options(since is not None or query.get("envelope") in ("1", "true"), since)


class Resumable(Protocol):
    user_id: str

    def start_with(self, frames: list[bytes], last: Position | None) -> None: ...


async def resume(
    reader: HistoryReader,
    connection: Resumable,
    since: str,
    max_payload_size: int,
    budget: ResumeBudget,
) -> Refusal | None:
    """Queue the recovery frame and the replay; a refusal only when Redis does not answer. The
    replay's bytes are charged to the user's ``budget`` (its resume was taken before)."""
    position = parse_position(since)
    if position is None:
        _not_recovered(connection, "invalid")
        return None
    try:
        reading = await reader.read(connection.user_id, position.epoch, position.offset)
    except UNAVAILABLE:
        return close_codes.REDIS_UNAVAILABLE  # 1013: retrying later with the same position works
    if reading.result != "ok":
        _not_recovered(connection, reading.result)
        return None
    budget.charge(connection.user_id, sum(map(len, reading.entries)))
    # The entries run up to the history's current offset: from the position, or from the last
    # offset a forked history shares with the position's epoch (history_read.lua).
    start = reading.offset - len(reading.entries)
    frames = []
    for offset, data in enumerate(reading.entries, start + 1):
        frame = envelope.message(data, format_position(reading.epoch, offset))
        if envelope.fits(frame, max_payload_size):
            frames.append(frame)
        else:
            metrics.MESSAGES_DROPPED.labels("too_large").inc()
            drops.envelope_too_large(len(frame), max_payload_size)
    metrics.RECOVERIES.labels("recovered").inc()
    metrics.MESSAGES_REPLAYED.inc(len(frames))
    connection.start_with(
        [envelope.recovery(True, len(frames)), *frames],
        Position(reading.epoch, reading.offset),
    )
    return None


def _not_recovered(connection: Resumable, reason: str) -> None:
    metrics.RECOVERIES.labels(reason).inc()
    connection.start_with([envelope.recovery(False, 0, reason)], None)


def is_replayed(frame: bytes, last: Position) -> bool:
    """A frame queued live that the replay up to ``last`` already carries."""
    text = envelope.position_of(frame)
    position = parse_position(text) if text is not None else None
    return position is not None and last.covers(position.epoch, position.offset)
