"""The harness shared by ``tests/`` and ``loadtest/``: real servers on free loopback ports and the
clients and waits that drive them. Never shipped (pyproject packages ``gateway*`` only).

Where and when:
- paths.py           ROOT, the repository checkout the servers run from
- ports.py           free_port
- waiting.py         wait_for (blocking), eventually (async) and in_thread (a blocking check for eventually)
- clock.py           FakeClock: a connection's clock that moves when the test says, timers and all

The gateway and what it talks to:
- tokens.py          SECRET and make_token: the JWTs every gateway started here accepts
- gateway_process.py Gateway / running_gateway: gunicorn as operators run it
- echo_gateway.py    the gateway's server stack serving an echo app (conformance suites);
  echo_gunicorn_conf.py is its gunicorn configuration
- redis_server.py    RedisServer (a private redis-server) and readers of its state
- redis_replica.py   ReplicatedPair: a master and a replica whose link a test can cut, then a promotion
- redis_cluster.py   a real Redis Cluster on free ports
- redis_sentinel.py  a real Redis Sentinel set on free ports
- fault_proxy.py     a TCP proxy that injects faults between the gateway and Redis
- garbage_redis.py   a peer that answers every RESP command with the same nonsense
- hung_resolver.py   a name server that never answers, for one process tree
- nginx.py           nginx with the repository's load-balancer config
- prometheus.py      promtool and a real Prometheus scraping the tests' gateways
- docker_engine.py   whether a Docker engine answers here (tests marked ``docker``)

Clients, polite and not:
- outbox.py          Outbox: a local connection as the hub holds it, recording what it is given
- clients.py         admit: one WebSocket client through admission
- api_client.py      call and post: one request to the HTTP API (/api/*), sent as wrong as a test
  wants; envelope_socket and frames_until: what a publish delivered
- bystander.py       the invariant of every hostile test: a bystander on the same worker loses nothing
- stalled_client.py  a raw client that stops reading, and the server's side of its socket
- raw_websocket.py   a client that sends whatever bytes it is given (fuzzing)
- handshake_burst.py a burst of raw handshakes at once
- close_server.py    a WebSocket server that closes with the code its path names (the JS client's tests)
- metrics.py         scrape and value: /metrics as a dict of samples
- browser.py         headless Chromium (Debian's, driven by Playwright) and pages limited to loopback
- app_page.py        the web app a browser test loads: the JS client and a token endpoint
- process_tree.py    stop_then_kill (a signal, a deadline, then SIGKILL); descendants and kill_tree:
  every process a script started, setsid or not
"""
