"""What a backend that only publishes needs: redis and these modules, no web server.

- ``publisher.py``: ``Publisher`` and ``AsyncPublisher``.
- ``options.py``: what the two publishers share: checked settings, history options, results.
- ``replication.py``: publishes confirmed by replicas (``WAIT``).
- ``control.py``: the backends' side of control: ``disconnect`` and ``online``.
"""
