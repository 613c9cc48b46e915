"""``?envelope=1`` and ``?since=<position>``: what a socket asked for, and its resume.

A resume reads the history of each of the socket's sources (its user, its groups, the broadcast)
after the cursor's position (gateway/history/cursor.py) once their channels are subscribed
(admission confirmed them), so whatever is published from then on also arrives live and waits in
the socket, unsent until the accept. The recovery frame and the replayed messages go first, in
order per source; a live message the replay already carried is dropped, so none is missing or
doubled. A source without a position in the cursor is read from the cursor's time (a group a
refresh joined: from then); one that cannot be recovered makes the whole resume
``recovered:false``, with nothing replayed. Only the user's history is read at once, the others
counted (history_read.lua's count): they are read, up to the offset counted, only once the total
is known to fit the cap, so Redis sends no more than the cap allows however many groups there are.
A bad position (garbage, truncated, huge, another epoch or user, the future) is answered
``recovered:false`` with nothing replayed; only the authenticated user's own keys are read. One of
an epoch the history forked from after a failover replays from the last offset both share.
An entry whose envelope is over the bound of a queued frame (``envelope.fits``) is dropped and
counted like a live one; ``replayed`` counts the frames that follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

from gateway import close_codes, keys, wire
from gateway.close_codes import Refusal
from gateway.history import envelope
from gateway.history.cursor import Cursor, fits, frame_for, parse_cursor
from gateway.history.reader import COUNT, HistoryReader, Reading
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
    groups: tuple[str, ...]
    cursor: Cursor

    def start_with(self, frames: list[bytes], cursor: Cursor | None) -> None: ...


async def resume(
    reader: HistoryReader,
    connection: Resumable,
    since: str,
    max_payload_size: int,
    budget: ResumeBudget,
) -> Refusal | None:
    """Queue the recovery frame and the replay; a refusal only when Redis does not answer. The
    replay's bytes are charged to the user's ``budget`` (its resume was taken before)."""
    parsed = parse_cursor(since, connection.groups)
    if parsed is None:
        _not_recovered(connection, "invalid")
        return None
    cursor, single = parsed
    user_id = connection.user_id
    sources: list[tuple[str | None, str]] = [(None, user_id)]
    sources += [(group, keys.group_source(group)) for group in (*connection.groups, keys.BROADCAST)]
    at: int | None = 0
    readings: list[Reading] = []
    try:
        if single:
            # A position of the user's alone (an earlier release, or no group message yet): its
            # groups and broadcasts are read from the time of that message.
            assert cursor.user is not None
            at = await reader.entry_time(user_id, cursor.user.offset)
            # None: the length cap pushed it out, its time with it; the other sources are read
            # from their start, to find whether they have anything it could have missed.
            cursor.since_ms = 0 if at is None else at
        gaps = []
        for group, source in sources:
            last = cursor.position(group)
            gaps.append((source, last.epoch, last.offset) if last else (source, "", cursor.since(group)))
        # The user's history is read, the others only counted: whatever the number of sources,
        # Redis sends no more than the cap allows, and a resume with nothing missed from its groups
        # and broadcasts (the common case) takes one round trip.
        readings = await reader.read_many(gaps, ["", *[COUNT] * (len(gaps) - 1)])
        failed = _failure(readings, reader.replay_cap)
        if at is None and readings[0].result == "ok":
            if any(reading.missed or reading.result != "ok" for reading in readings[1:]):
                failed = "trimmed"  # where what they sent after that message starts is unknown
            cursor.since_ms = connection.cursor.since_ms  # nothing of theirs yet: from now on
        if failed is None:
            failed = await _read_counted(reader, gaps, readings)
    except UNAVAILABLE:
        budget.charge(user_id, _bytes(readings))
        return close_codes.REDIS_UNAVAILABLE  # 1013: retrying later with the same position works
    # What Redis sent is charged, recovered or not: a resume over the cap costs its reading too.
    budget.charge(user_id, _bytes(readings))
    if failed is not None:
        _not_recovered(connection, failed)
        return None
    frames = []
    for (group, _), reading in zip(sources, readings, strict=True):
        # The entries run up to the source's current (or counted) offset: from the position, or
        # from the last offset a forked history shares with the position's epoch (history_read.lua).
        start = reading.offset - len(reading.entries)
        for offset, data in enumerate(reading.entries, start + 1):
            frame = frame_for(cursor, group, wire.HistoryMessage(reading.epoch, offset, data), None)
            if frame is not None and fits(frame, max_payload_size):
                frames.append(frame)
    metrics.RECOVERIES.labels("recovered").inc()
    metrics.MESSAGES_REPLAYED.inc(len(frames))
    connection.start_with([envelope.recovery(True, len(frames)), *frames], cursor)
    return None


def _bytes(readings: list[Reading]) -> int:
    return sum(len(data) for reading in readings for data in reading.entries)


def _failure(readings: list[Reading], cap: int) -> str | None:
    failed = next((reading.result for reading in readings if reading.result != "ok"), None)
    if failed is None and sum(reading.missed for reading in readings) > cap:
        failed = "too_long"  # the cap bounds the whole replay, whatever the number of sources
    return failed


async def _read_counted(
    reader: HistoryReader, gaps: list[tuple[str, str, int]], readings: list[Reading]
) -> str | None:
    """Read the sources a count found messages in, up to the offset counted (what follows was
    published since, and arrives live), into ``readings``; why not, when one changed meanwhile."""
    counted = [i for i, reading in enumerate(readings) if i and reading.missed]
    if not counted:
        return None
    read = await reader.read_many([gaps[i] for i in counted], [str(readings[i].offset) for i in counted])
    failed = None
    for i, reading in zip(counted, read, strict=True):
        if reading.result != "ok":
            failed = failed or reading.result
        elif reading.epoch != readings[i].epoch:
            failed = failed or "epoch"  # a failover between the count and the read
        elif len(reading.entries) != readings[i].missed:
            failed = failed or "trimmed"  # the length cap pushed some out meanwhile
        readings[i] = reading
    return failed


def _not_recovered(connection: Resumable, reason: str) -> None:
    metrics.RECOVERIES.labels(reason).inc()
    connection.start_with([envelope.recovery(False, 0, reason)], None)
