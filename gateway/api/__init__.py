"""The HTTP API for backends that do not speak Redis or Python (docs/publishing.md, "HTTP API"):
publish (one, or a batch), disconnect, online, behind ``WEBSOCKET_API_KEYS``.

- ``routes.py``: ``HttpApi``, the ASGI app under ``/api``: key, path, method, content type, body,
  handler; every answer JSON, counted and timed
- ``requests.py``: the key check (constant time), the content type, the bounded body, its JSON
- ``bodies.py``: each operation's body checked into what the calls need, or an ``ApiError``
- ``commands.py``: the Redis side, the publisher library's scripts on the worker's command client
- ``openapi.py``: the OpenAPI 3.1 description served at ``/api/openapi.json``
"""
