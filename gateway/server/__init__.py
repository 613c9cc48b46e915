"""The server side: everywhere the gateway reaches into uvicorn, uvicorn-worker, gunicorn,
websockets, redis-py, prometheus_client or asyncio past their public API, and why.

- ``protocol.py``: uvicorn's WebSocket protocol, adapted; each socket's ``Link`` to the app.
  ``slots.py``: the lean inbox and flag it puts in place of uvicorn's per-socket queue and event.
- ``http.py``: uvicorn's HTTP protocol with a deadline on every request's headers, bounded heads
  and pipelines, and a 503 near the descriptor limit (the table: ``gateway.http_refusals``).
- ``worker.py``: the gunicorn worker (uvicorn-worker's, with the process's settings and the app
  built from them) and the drain hook: uvicorn's shutdown, which first runs ``gateway.drain``.
- ``listeners.py``: one SO_REUSEPORT listening socket per worker; the master's port check.
- ``resolving.py``: redis-py's connects look host names up with a deadline (gateway/topology/name_lookup.py).
- ``internals.py``: every internal below as data, with why it is used.
- ``upstream.py``: checks them at start-up, from gunicorn.conf.py (one line and exit 2 when one is
  missing), and in ``make upgrade-check`` before a range is widened.

Nothing here is public API, so a release can rename or drop any of it without an error: an
override is no longer called, an attribute nobody reads any more, and a protection is gone
silently. Each paragraph below names an upstream class and what of it the gateway uses;
tests/test_server.py keeps them in step with internals.py's list.

uvicorn ``WebSocketsSansIOProtocol``, subclassed by protocol.py. Overridden: ``pause_writing``
and ``resume_writing`` (slow-consumer protection, queued frames flushed), ``send`` (a close
passes flow control; the handshake freed after the accept), ``send_receive_event_to_app`` and
``handle_parser_exception`` (invalid UTF-8 closes with 1007, closes carry the table's reason),
``handle_connect`` (hands the Link over), ``data_received`` (activity clock, unparsable
handshakes answered, input parsed in slices, nothing but a close handshake after a close),
``handle_ping``, ``handle_pong``, ``handle_text``, ``handle_bytes`` and ``handle_cont`` (every
frame spends the message budget; bounded pongs),
``keepalive_timeout`` (a ping timeout tells the app and closes with the ping_timeout label),
``start_keepalive`` and ``stop_keepalive`` (the socket joins and leaves the worker's ping wheel,
keepalive.py, which reads ``ping_interval`` and ``ping_timeout`` and sets ``pending_ping_payload``
and ``ping_sent_at`` as uvicorn's pings did),
``shutdown`` (what is left closes with 1001 going_away), ``on_task_complete`` (a lingering
socket is reset).
State it reads or replaces: ``queue`` and ``writable`` (leaner per-socket objects), ``conn``,
``transport``, ``loop``, ``scope``, ``handshake_initiated``, ``handshake_complete``,
``close_sent``, ``close_timer``, ``read_paused``, ``disconnected``, ``frames``,
``curr_msg_data_type``, ``request`` and ``response``.

uvicorn ``HttpToolsProtocol``, subclassed by http.py: ``connection_made``,
``on_message_begin``, ``on_headers_complete``, ``on_response_complete`` and ``connection_lost``
start and stop the header deadline, which closes ``transport`` by a timer on ``loop``;
``data_received`` is a copy of upstream's that feeds ``parser`` in slices and answers a refusal,
calling ``_unset_keepalive_if_required``, ``_should_upgrade``, ``handle_websocket_upgrade``,
``_unsupported_upgrade_warning`` and ``send_400_response`` (with ``logger``'s line) as upstream
does; ``on_url`` and ``on_header`` count the head; ``on_headers_complete`` reads ``headers``
(an upgrade needs a Host) and bounds ``pipeline`` behind ``cycle``.

uvicorn ``RequestResponseCycle``: ``keep_alive`` is cleared on the last answer of a pipeline too
deep, which then closes the connection.

uvicorn ``Server``, subclassed by worker.py's _DrainingServer: ``shutdown`` closes
``servers`` (the listening socket) and drains first; ``serve`` and ``started`` as
uvicorn-worker uses them.

uvicorn ``Config``: its ``__init__`` takes the WebSocket sizes, pings, deflate and header
options the worker passes.

uvicorn-worker ``UvicornWorker``, subclassed by worker.py: ``_serve`` is a copy of upstream's
with the draining Server; it calls ``_install_sigquit_handler`` and runs ``config``, which is
built from ``CONFIG_KWARGS`` (the only way to pass uvicorn options through gunicorn).

gunicorn ``Worker``: ``load_wsgi`` is overridden to build the app with the worker's settings;
``wsgi`` is the app (the drain finds its state there) and ``sockets`` the listening sockets;
``init_signals`` is overridden to act on a stop the master sent before the worker had handlers.

gunicorn ``Arbiter``: ``WORKER_BOOT_ERROR``, the exit status of a worker that failed to boot;
``SIG_QUEUE``, where the master's handler, inherited through the fork, queued a stop that reached
the worker before the post_fork hook of gunicorn.conf.py (worker.py's hold_early_stop) took over.

gunicorn ``Logger``: ``error_log``, which the gateway's own loggers write through (and whose
"Listening at:" line listeners.py fills in).

gunicorn ``BaseSocket``: ``sock``, the socket it wraps, which the worker hands uvicorn: uvloop
closes the descriptor and then the object it was given, and the wrapper would log EBADF.

websockets ``ServerProtocol``, the sans-I/O connection protocol.py drives directly:
``handshake_exc`` (a rejected handshake), ``extensions`` (compression on), ``send_text``,
``send_close``, ``fail`` and ``data_to_send`` (frames written in one batch), ``state`` and ``close_sent``
(what may still be sent, which close went out), ``logger`` (a quieter one).

websockets ``State``: ``OPEN``, data frames only while open.

redis-py ``AbstractConnection``, driven by hand for the worker's one pub/sub connection (no
PubSub object): ``read_response`` (the reader, with a timeout), ``send_packed_command`` and
``pack_commands`` (SUBSCRIBE batches).

redis-py ``ConnectionPool``: ``make_connection``, a private connection for pub/sub.

redis-py ``Connection``, sync and async, the TCP connection every other derives from, wrapped by
resolving.py: ``_connect`` looks the name up within ``socket_connect_timeout`` (of the address
family ``socket_type``, sync) and connects to each address through ``host`` (sync) or
``_connection_arguments`` (async, which also keeps the name for TLS).

redis-py ``Sentinel``, sync and async, subclassed by gateway/topology/sentinels.py:
``discover_master`` is overridden to ask every sentinel at once (the clients in ``sentinels``)
and take the master named with the newest epoch, each answer checked by ``check_master_state``;
``connection_kwargs`` (async) are the master's connection options, for the pub/sub pool.

redis-py ``SentinelConnectionPool``, sync and async: its ``__init__`` (async, with the service
name and the sentinel manager) builds the pub/sub pool and the blocking command pool directly;
gateway/broker/sentinel.py reads ``master_address`` to move a pool still on the old master; a
publisher that built its client closes the sentinels' clients it finds in ``sentinel_manager``.

Python ``coroutines`` (asyncio's module; before Python 3.12 only): ``_is_coroutine`` marks the
app a coroutine function for Starlette (gateway/app.py); 3.12 has a public function for it.

redis-py ``RedisCluster``: its ``commands_parser`` is replaced (gateway/topology/modes.py), so
the COMMAND table is read once and not again from a dead master at every re-initialisation.

redis-py ``AsyncCommandsParser``: ``initialize``, subclassed to read ``commands`` once.

prometheus_client ``MmapedDict``: ``read_all_values_from_file`` and ``write_value`` fold a dead
worker's metric files into an archive.

Also relied on, public but version-bound (pyproject.toml pins the ranges; the e2e tests run real
gunicorn): with gunicorn's ``reuse_port`` each worker binds its own socket after the fork (24
and later; listeners.py); ``control_socket_disable`` turns off gunicorn's control socket (25.1
and later); gunicorn.conf.py's hooks ``on_starting``, ``pre_fork``, ``post_fork`` and ``child_exit`` check the
port, name each worker's leases and release a dead worker's; and ``worker_class`` may be a class,
which carries the settings to every worker.
"""
