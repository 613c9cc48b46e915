"""History and recovery: what lets a client (``?since=``) and a worker (after a pub/sub reconnect)
get back the messages published with history that they missed.

- ``position.py``  the opaque position string given to publishers and clients, and its parsing.
- ``envelope.py``  the JSON frames of envelope mode (``?envelope=1``): messages and recovery.
- ``cursor.py``    one cursor per connection: its position in each source (user, groups,
  broadcast), the position of its every envelope frame and its ``since``.
- ``reader.py``    reads a user's history after a position, bounded (gateway/lua/history_read.lua).
- ``recovery.py``  ``?since=``: the recovery frame and the replay, merged with what arrived live.
- ``resume_budget.py``  how often, and how many bytes, one user may resume on one worker.
- ``gap.py``       the gap fill after the broker re-subscribed a worker's users.
- ``held.py``      what arrives for a user while its gap is read: generations per outage, a cap.
- ``state.py``     per local user, what history keeps: the last (epoch, offset) delivered (the gap
  fill starts there, and a message at or below it is a duplicate), when the user joined, and the
  holds.

The hub (gateway/hub.py) routes ``\\xffH`` messages (gateway/wire.py) and holds the ``HistoryState``,
which the gap fill reads; nothing here imports the hub.
No offset is given twice in an epoch: a history that moved to another server (a failover) goes
on in a new epoch, forked from the old one (gateway/lua/publish.lua).
"""
