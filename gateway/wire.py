"""What travels on a user's channel: plain payloads, and the gateway's own messages.

A plain payload is whatever a backend published: the hub delivers only valid UTF-8, and no valid
UTF-8 text contains the byte 0xFF. So a payload that starts with 0xFF is the gateway's own,
whatever any plain publisher sends, and the byte after it says which kind:

    b"\\xffH" <epoch> b" " <offset> b" " <data>    a message written to the user's history first
                                                 (built by the history publish script)
    b"\\xffC" <command> [b" " <argument>]          a control command for the user's connections

Epochs are ASCII letters and digits, at most ``MAX_EPOCH_LENGTH`` (the publish script makes hex);
offsets are decimal, at most ``MAX_OFFSET_DIGITS`` (Lua counts exactly that far); commands are
ASCII without spaces; ``data`` is the published payload, byte for byte. Anyone who can PUBLISH
can put anything after 0xFF: a frame outside these bounds is not a history message, and the
epoch, which goes into envelope JSON and positions unescaped, can never carry a quote.
"""

from __future__ import annotations

from typing import NamedTuple

MARK = 0xFF
HISTORY = b"\xffH"
CONTROL = b"\xffC"
MAX_EPOCH_LENGTH = 40
MAX_OFFSET_DIGITS = 15


class HistoryMessage(NamedTuple):
    epoch: str
    offset: int
    data: bytes


class ControlCommand(NamedTuple):
    command: str
    argument: str | None


def history_message(epoch: str, offset: int, data: bytes) -> bytes:
    return b"%s%s %d %s" % (HISTORY, epoch.encode(), offset, data)


def parse_history(payload: bytes) -> HistoryMessage | None:
    """The parts of a history message; None when ``payload`` is not a well-formed one."""
    if not payload.startswith(HISTORY):
        return None
    # Indexes, not split: the data, the bulk of the message, is copied once. Each search is
    # bounded by its field's length, so a frame of one long field costs no scan of it.
    epoch_end = payload.find(b" ", 2, 3 + MAX_EPOCH_LENGTH)
    if epoch_end < 3:
        return None
    offset_end = payload.find(b" ", epoch_end + 2, epoch_end + 2 + MAX_OFFSET_DIGITS)
    if offset_end < 0:
        return None
    epoch = payload[2:epoch_end]
    offset = payload[epoch_end + 1 : offset_end]
    if not (is_epoch(epoch) and offset.isdigit()):
        return None
    return HistoryMessage(epoch.decode(), int(offset), payload[offset_end + 1 :])


def is_epoch(epoch: bytes) -> bool:
    """One the publish script could have made: it goes unescaped into positions and JSON."""
    # bytes.isalnum is ASCII-only: no quote, dash, space or non-ASCII byte passes.
    return len(epoch) <= MAX_EPOCH_LENGTH and epoch.isalnum()


def control_command(command: str, argument: str | None = None) -> bytes:
    if not command or " " in command or not command.isascii():
        raise ValueError(f"a control command is one ASCII word, got {command!r}")
    body = command if argument is None else f"{command} {argument}"
    return CONTROL + body.encode()


def parse_control(payload: bytes) -> ControlCommand | None:
    """The command and its argument; None when ``payload`` is not a well-formed control message."""
    if not payload.startswith(CONTROL):
        return None
    try:
        text = payload[2:].decode()
    except UnicodeDecodeError:
        return None
    command, _, argument = text.partition(" ")
    if not command:
        return None
    return ControlCommand(command, argument or None)
