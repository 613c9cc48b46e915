"""Which Redis, and how a process talks to it: one server, a Redis Cluster or Sentinel.

- ``modes.py``: ``Topology`` from the ``REDIS_*`` settings, and the command clients of each mode.
- ``sentinels.py``: asking every sentinel where the master is.
- ``name_lookup.py``: host name lookups with a deadline, for every connection the gateway makes.
- ``scripts.py``: the Lua scripts of ``gateway/lua/``, run on any topology.
"""
