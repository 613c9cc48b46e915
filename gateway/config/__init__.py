"""The gateway's settings: one table of environment variables, one validated object built from it.

- ``table.py``: every variable, with its default, bounds and meaning; the README's table is generated
  from it.
- ``parsers.py``: the parsers the table's rows use, and ``SettingsError``, which names the variable.
- ``settings.py``: ``Settings.from_environ()``, the one object a process builds.
- ``jwt_keys.py``: ``JWT_SECRET_KEY`` checked against ``JWT_ALGORITHM`` at start-up.

The publisher library reads its few variables from the table without importing ``settings.py``
(which loads PyJWT and cryptography).
"""
