"""The harness shared by ``tests/`` and ``loadtest/``: real servers on free loopback ports and the
clients and waits that drive them. Never shipped (pyproject packages ``gateway*`` only).

- paths.py           ROOT, the repository checkout the servers run from
- ports.py           free_port
- waiting.py         wait_for (blocking), eventually (async) and in_thread (a blocking check for eventually)
- tokens.py          SECRET and make_token: the JWTs every gateway started here accepts
- redis_server.py    RedisServer (a private redis-server) and readers of its state
- redis_replica.py   ReplicatedPair: a master and a replica whose link a test can cut, then a promotion
- gateway_process.py Gateway / running_gateway: gunicorn as operators run it
- clients.py         admit: one WebSocket client through admission
- stalled_client.py  a raw client that stops reading, and the server's side of its socket
- metrics.py         scrape and value: /metrics as a dict of samples
- nginx.py           nginx with the repository's load-balancer config
- browser.py         headless Chromium (Debian's, driven by Playwright) and pages limited to loopback
"""
