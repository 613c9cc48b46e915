"""The image stops promptly on a SIGTERM sent right after its container starts (tini forwards it;
gunicorn as PID 1 dropped it). Skipped, with the reason, where no Docker engine answers."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from harness.docker_engine import engine_problem
from harness.paths import ROOT
from harness.tokens import SECRET

pytestmark = pytest.mark.docker

_problem = engine_problem() or (None if shutil.which("docker") else "no docker CLI on PATH")
if _problem is not None:
    pytest.skip(_problem, allow_module_level=True)


def docker(*args: str, timeout: float = 60) -> str:
    run = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert run.returncode == 0, f"docker {' '.join(args)}: {run.stderr[-2000:]}"
    return run.stdout.strip()


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    tag = f"ws-gateway-stop-test:{uuid.uuid4().hex[:8]}"
    docker("build", "--target", "runtime", "-t", tag, str(ROOT), timeout=900)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def test_a_sigterm_right_after_the_container_starts_stops_it(image: str) -> None:
    """SIGTERM within 0.1 s of the start: the container exits within 5 s, not at a grace period."""
    name = f"gateway-stop-{uuid.uuid4().hex[:8]}"
    try:
        # Redis out of reach does not matter: the signal comes before anything connects.
        started = time.monotonic()
        docker(
            "run",
            "-d",
            "--name",
            name,
            "-e",
            f"JWT_SECRET_KEY={SECRET}",
            "-e",
            "REDIS_URL=redis://127.0.0.1:1",
            image,
        )
        docker("kill", "--signal", "TERM", name)
        signalled = time.monotonic() - started
        docker("wait", name, timeout=30)
        stopped = time.monotonic() - started
        # docker run -d returns once the container started; its own overhead is not the gateway's.
        assert stopped - signalled < 5, f"exited {stopped - signalled:.1f}s after the SIGTERM"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
