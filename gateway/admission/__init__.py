"""What admission checks before a socket is accepted (gateway/endpoint.py holds the order).

- ``query.py``: the /ws query string, parsed once and bounded.
- ``auth.py``: the token of a handshake, validated with PyJWT.
- ``handshakes.py``: the worker's pool of handshakes in admission, a share per user and address.
"""
