"""What admission decides and takes before a socket is accepted (gateway/endpoint.py holds the order).

- ``preflight.py``: origin, query, token, draining, capacity: an identity or a refusal, no Redis command.
- ``query.py``: the /ws query string, parsed once and bounded.
- ``auth.py``: the token of a handshake, validated with PyJWT.
- ``handshakes.py``: the worker's pool of handshakes in admission, a share per user and address.
- ``subscription.py``: join and leave: the hub says first or last, the broker subscribes or drops.
- ``groups.py``: a connection's groups (its token's ``groups`` claim) and the broadcast, the same
  way, and changed live by a refresh.
"""
