"""``?envelope=1`` and ``?since=<position>``: what a socket asked for, and its resume.

A resume reads the user's history after the position once the user's channel is subscribed
(admission confirmed it), so whatever is published from then on also arrives live and waits in
the socket's outbox, unsent until the accept. The recovery frame and the replayed messages go
first; a live message the replay already carried is dropped, so none is missing or doubled.
A bad position (garbage, truncated, huge, another epoch or user, the future) is answered
``recovered:false`` with nothing replayed; only the authenticated user's own keys are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

from gateway import close_codes, metrics
from gateway.close_codes import Refusal
from gateway.history import envelope
from gateway.history.position import Position, format_position, parse_position
from gateway.history.reader import HistoryReader
from gateway.history.resume_budget import ResumeBudget
from gateway.redis_topology import UNAVAILABLE


class Options(NamedTuple):
    envelope: bool
    since: str | None


def parse_options(query: Mapping[str, str]) -> Options:
    """The socket's mode from its query (gateway/query.py); ``since`` implies envelope mode."""
    since = query.get("since")
    return Options(since is not None or query.get("envelope") in ("1", "true"), since)


class Resumable(Protocol):
    user_id: str

    def start_with(self, frames: list[bytes], last: Position | None) -> None: ...


async def resume(
    reader: HistoryReader, connection: Resumable, since: str, budget: ResumeBudget
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
    metrics.RECOVERIES.labels("recovered").inc()
    metrics.MESSAGES_REPLAYED.inc(len(reading.entries))
    frames = [envelope.recovery(True, len(reading.entries))]
    for offset, data in enumerate(reading.entries, position.offset + 1):
        frames.append(envelope.message(data, format_position(reading.epoch, offset)))
    connection.start_with(frames, Position(reading.epoch, position.offset + len(reading.entries)))
    return None


def _not_recovered(connection: Resumable, reason: str) -> None:
    metrics.RECOVERIES.labels(reason).inc()
    connection.start_with([envelope.recovery(False, 0, reason)], None)


def is_replayed(frame: bytes, last: Position) -> bool:
    """A frame queued live that the replay up to ``last`` already carries."""
    text = envelope.position_of(frame)
    position = parse_position(text) if text is not None else None
    return position is not None and last.covers(position.epoch, position.offset)
