"""The gateway's settings: one table of environment variables, one validated object built from it.

- ``table.py``: the one table, in the order of docs/reference.md (which it generates), made of rows kept by
  topic: ``server.py`` (listening, sockets, proxies), ``redis.py`` (which Redis, and its variables
  checked against each other), ``tokens.py`` (JWT), ``limits.py`` (what a user, connection or
  worker may hold), ``history.py`` (what resumes may replay), ``api.py`` (the HTTP API: its keys, body limit
  and history) and ``operations.py`` (metrics files, logs, the development console).
- ``parsers.py``: what a row is (``Setting``), how each kind of value is read, and
  ``SettingsError``, which names the variable.
- ``settings.py``: ``Settings.from_environ()``, the one object a process builds.
- ``jwt_keys.py``: ``JWT_SECRET_KEY`` checked against ``JWT_ALGORITHM`` at start-up.
- ``cpus.py``: the CPUs the process may use (affinity, the cgroup's quota): ``WEB_CONCURRENCY``'s
  default.

Settings hold values only: gateway/topology/ makes Redis clients of them (``Topology.of(settings)``)
and neither imports the other's module. The publisher library reads its few variables from the
table without importing ``settings.py`` (which loads PyJWT and cryptography).
"""
