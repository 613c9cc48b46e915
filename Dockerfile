# syntax=docker/dockerfile:1
# The gateway image: `docker build -t ws-gateway .`, run as `gunicorn -c gunicorn.conf.py`.
# Give containers a stop grace period longer than gunicorn's graceful_timeout
# (WEBSOCKET_DRAIN_WINDOW plus a margin): compose.yaml sets 30 s; `docker run --stop-timeout 30`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the locked dependencies (hashes checked) and the project ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements-runtime.lock /src/
RUN /opt/venv/bin/pip install --require-hashes -r /src/requirements-runtime.lock
COPY pyproject.toml README.md LICENSE /src/
COPY gateway /src/gateway
# Its dependencies, the server extra's included, are all in the lock; the build uses the locked
# setuptools.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation /src

# --- runtime: the virtualenv, gunicorn.conf.py and nothing else, as a non-root user ---
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WEBSOCKET_HOST=0.0.0.0 \
    WEBSOCKET_PORT=8080
# tini is PID 1: it forwards signals and reaps orphans. The kernel drops a signal sent to PID 1
# that has no handler for it, so gunicorn as PID 1 ignored a SIGTERM that came before it set its
# handlers (the first moments after start) and was killed at the grace period.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY gunicorn.conf.py /app/gunicorn.conf.py
USER 10001:10001
EXPOSE 8080
# Liveness of the master's workers; readiness of Redis is GET /healthz/redis.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WEBSOCKET_PORT', '8080'), timeout=2)"]
# gunicorn drains on SIGTERM: every socket is closed with 1012 within WEBSOCKET_DRAIN_WINDOW.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--"]
CMD ["gunicorn", "-c", "gunicorn.conf.py"]

# --- loadtest: the runtime plus locust, running loadtest/locustfile.py (compose profile "loadtest") ---
FROM runtime AS loadtest
USER root
COPY --from=build /src /src
RUN /opt/venv/bin/pip install --no-cache-dir "/src[loadtest]"
COPY loadtest /app/loadtest
USER 10001:10001
EXPOSE 8089 5557
ENTRYPOINT ["tini", "--", "locust", "-f", "/app/loadtest/locustfile.py"]
CMD ["--help"]

# The default target is the gateway.
FROM runtime
