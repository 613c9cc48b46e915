# make run: the gateway on 127.0.0.1:8080 with 2 workers and a private Redis. make test: lint and the
# suite; make test-quick: the same without the browser, Redis Cluster and Sentinel tests.
.PHONY: run test test-quick lint install clean bench loadtest lock upgrade-check

# Each stamp says an install is done; it is redone only when what it installs from changed.
STAMP := .venv/.installed-test
RUN_STAMP := .venv/.installed-run
LOADTEST_STAMP := .venv/.installed-loadtest

$(STAMP): pyproject.toml requirements.lock scripts/bootstrap
	scripts/bootstrap test
	touch $@

$(RUN_STAMP): pyproject.toml requirements-runtime.lock scripts/bootstrap
	scripts/bootstrap
	touch $@

$(LOADTEST_STAMP): pyproject.toml requirements-runtime.lock scripts/bootstrap
	scripts/bootstrap loadtest
	touch $@

install: $(STAMP)

run: $(RUN_STAMP)
	scripts/run-dev

lint: $(STAMP)
	.venv/bin/ruff check gateway harness tests loadtest gunicorn.conf.py
	.venv/bin/ruff format --check gateway harness tests loadtest gunicorn.conf.py
	.venv/bin/mypy gateway harness loadtest

test: $(STAMP)
	scripts/ensure-redis-server
	scripts/ensure-nginx
	scripts/ensure-prometheus
	scripts/ensure-chromium
	scripts/ensure-tini
	$(MAKE) lint
	.venv/bin/pytest $(PYTEST_ARGS)

# The inner loop: lint and the suite without the tests that start Chromium, a Redis Cluster or
# Sentinel (markers set by tests/conftest.py); Chromium is not installed for it.
QUICK := not browser and not cluster and not sentinel
test-quick: $(STAMP)
	scripts/ensure-redis-server
	scripts/ensure-nginx
	scripts/ensure-prometheus
	scripts/ensure-tini
	$(MAKE) lint
	.venv/bin/pytest -m "$(QUICK)" $(PYTEST_ARGS)

# Rewrite requirements.lock and requirements-runtime.lock from pyproject.toml (needs PyPI);
# LOCK_ARGS=--keep resolves within the current pins (nothing upgraded that need not be).
lock: $(STAMP)
	.venv/bin/python scripts/lock $(LOCK_ARGS)

# The suite against the newest releases inside pyproject.toml's ranges, in a throwaway venv,
# without the lock: run it before widening a range or re-locking. PYTEST_ARGS narrows it.
upgrade-check:
	scripts/ensure-redis-server
	scripts/ensure-nginx
	scripts/ensure-prometheus
	scripts/ensure-chromium
	scripts/ensure-tini
	scripts/upgrade-check $(PYTEST_ARGS)

# Every scenario against the gateway and the Python alternatives, history's cost, groups' cost, the
# HTTP API against the publisher library, one Redis against
# a Redis Cluster, what an idle socket costs (one Redis, a Cluster) and the latency tail at a low
# rate; rewrites the committed loadtest/results/ (on purpose: each module alone writes to a scratch
# directory unless given --out). The long hold (python -m loadtest.bench.idle --hold) is not in it.
BENCH_OUT := --out loadtest/results
bench:
	scripts/bootstrap test,bench
	scripts/ensure-redis-server
	.venv/bin/python -m loadtest.bench $(BENCH_OUT) $(BENCH_ARGS)
	.venv/bin/python -m loadtest.bench.history $(BENCH_OUT)
	.venv/bin/python -m loadtest.bench.groups $(BENCH_OUT)
	.venv/bin/python -m loadtest.bench.api $(BENCH_OUT)
	.venv/bin/python -m loadtest.bench.cluster $(BENCH_OUT)
	.venv/bin/python -m loadtest.bench.idle $(BENCH_OUT)
	.venv/bin/python -m loadtest.bench.idle --cluster $(BENCH_OUT)
	.venv/bin/python -m loadtest.bench.idle --tail $(BENCH_OUT)

# Locust, headless and bounded in time, against a gateway it starts (or TARGET_URL); LOADTEST_ARGS
# passes options to loadtest/run.py (--users, --run-time, ...).
loadtest: $(LOADTEST_STAMP)
	scripts/ensure-redis-server
	.venv/bin/python -m loadtest.run $(LOADTEST_ARGS)

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
