"""The cluster-wide per-user connection limit: leases in Redis, taken, kept alive and given back.

- ``limiter.py``: a worker's leases: acquire at admission, release; its beat.
- ``keeper.py``: the beat: one key per worker and holder tag keeps its leases alive; a key found
  gone makes the worker re-assert them.
- ``worker_index.py``: where a worker lists its leases, per slot, for gunicorn's master.
- ``releases.py``: places given back (and abandoned acquires) sent again until Redis confirms them.
- ``dead_workers.py``: gunicorn's master releases a dead worker's leases at once.
- ``revocation.py``: a token issued before its user's last disconnect is refused.
"""
