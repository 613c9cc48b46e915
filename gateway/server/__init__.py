"""The server side: everywhere the gateway reaches into uvicorn, uvicorn-worker, gunicorn,
websockets, redis-py or prometheus_client past their public API, and why.

- ``protocol.py``: uvicorn's WebSocket protocol, adapted; each socket's ``Link`` to the app.
  ``slots.py``: the lean inbox and flag it puts in place of uvicorn's per-socket queue and event.
- ``http.py``: uvicorn's HTTP protocol with a deadline on every request's headers.
- ``worker.py``: the gunicorn worker (uvicorn-worker's, with the process's settings and the app
  built from them) and the drain hook: uvicorn's shutdown, which first runs ``gateway.drain``.
- ``listeners.py``: one SO_REUSEPORT listening socket per worker; the master's port check.
- ``upstream.py``: every internal below as data, checked at start-up by gunicorn.conf.py (one
  line and exit 2 when one is missing) and by ``make upgrade-check`` before a range is widened.

Nothing here is public API, so a release can rename or drop any of it without an error: an
override is no longer called, an attribute nobody reads any more, and a protection is gone
silently. Each paragraph below names an upstream class and what of it the gateway uses;
tests/test_server.py keeps them in step with upstream.py's list.

uvicorn ``WebSocketsSansIOProtocol``, subclassed by protocol.py. Overridden: ``pause_writing``
and ``resume_writing`` (slow-consumer protection, queued frames flushed), ``send`` (a close
passes flow control; the handshake freed after the accept), ``send_receive_event_to_app`` and
``handle_parser_exception`` (invalid UTF-8 closes with 1007, closes carry the table's reason),
``handle_connect`` (hands the Link over), ``data_received`` (activity clock, unparsable
handshakes answered), ``handle_ping`` and ``handle_pong`` (the message budget, bounded pongs),
``keepalive_timeout`` (a ping timeout tells the app and closes with the ping_timeout label),
``shutdown`` (what is left closes with 1001 going_away), ``on_task_complete`` (a lingering
socket is reset).
State it reads or replaces: ``queue`` and ``writable`` (leaner per-socket objects), ``conn``,
``transport``, ``loop``, ``scope``, ``handshake_initiated``, ``handshake_complete``,
``close_sent``, ``close_timer``, ``read_paused``, ``disconnected``, ``frames``,
``curr_msg_data_type``, ``request`` and ``response``.

uvicorn ``HttpToolsProtocol``, subclassed by http.py: ``connection_made``,
``on_message_begin``, ``on_headers_complete`` and ``connection_lost`` start and stop the header
deadline, which closes ``transport`` by a timer on ``loop``.

uvicorn ``Server``, subclassed by worker.py's _DrainingServer: ``shutdown`` closes
``servers`` (the listening socket) and drains first; ``serve`` and ``started`` as
uvicorn-worker uses them.

uvicorn ``Config``: its ``__init__`` takes the WebSocket sizes, pings, deflate and header
options the worker passes.

uvicorn-worker ``UvicornWorker``, subclassed by worker.py: ``_serve`` is a copy of upstream's
with the draining Server; it calls ``_install_sigquit_handler`` and runs ``config``, which is
built from ``CONFIG_KWARGS`` (the only way to pass uvicorn options through gunicorn).

gunicorn ``Worker``: ``load_wsgi`` is overridden to build the app with the worker's settings;
``wsgi`` is the app (the drain finds its state there) and ``sockets`` the listening sockets.

gunicorn ``Arbiter``: ``WORKER_BOOT_ERROR``, the exit status of a worker that failed to boot.

gunicorn ``Logger``: ``error_log``, which the gateway's own loggers write through.

websockets ``ServerProtocol``, the sans-I/O connection protocol.py drives directly:
``handshake_exc`` (a rejected handshake), ``extensions`` (compression on), ``send_text``,
``send_close``, ``fail`` and ``data_to_send`` (frames written in one batch), ``state`` and ``close_sent``
(what may still be sent, which close went out), ``logger`` (a quieter one).

websockets ``State``: ``OPEN``, data frames only while open.

redis-py ``AbstractConnection``, driven by hand for the worker's one pub/sub connection (no
PubSub object): ``read_response`` (the reader, with a timeout), ``send_packed_command`` and
``pack_commands`` (SUBSCRIBE batches).

redis-py ``ConnectionPool``: ``make_connection``, a private connection for pub/sub.

redis-py ``RedisCluster``: its ``commands_parser`` is replaced (gateway/redis_topology.py), so
the COMMAND table is read once and not again from a dead master at every re-initialisation.

redis-py ``AsyncCommandsParser``: ``initialize``, subclassed to read ``commands`` once.

prometheus_client ``MmapedDict``: ``read_all_values_from_file`` and ``write_value`` fold a dead
worker's metric files into an archive.

Also relied on, public but version-bound (pyproject.toml pins the ranges; the e2e tests run real
gunicorn): with gunicorn's ``reuse_port`` each worker binds its own socket after the fork (24
and later; listeners.py); ``control_socket_disable`` turns off gunicorn's control socket (25.1
and later); gunicorn.conf.py's hooks ``on_starting``, ``pre_fork`` and ``child_exit`` check the
port, name each worker's leases and release a dead worker's; and ``worker_class`` may be a class,
which carries the settings to every worker.
"""
