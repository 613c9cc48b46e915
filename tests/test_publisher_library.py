"""The publisher as a library a backend depends on: context managers, a client passed in stays the
caller's, type hints shipped, and the light distribution works without the server's dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from packaging.requirements import Requirement

from gateway import AsyncPublisher, Publisher
from harness.paths import ROOT
from harness.redis_server import RedisServer
from harness.waiting import eventually, in_thread, wait_for

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SERVER_ONLY = ("starlette", "uvicorn", "uvicorn_worker", "gunicorn", "jwt", "prometheus_client", "websockets")


def _named(server: RedisServer, name: str) -> int:
    """How many connections named ``name`` the server holds now."""
    with server.client() as client:
        return sum(1 for c in client.client_list() if c["name"] == name)


def test_with_closes_the_publishers_own_client(redis_server: RedisServer, user: str) -> None:
    name = f"own-{user}"
    with Publisher(f"{redis_server.url}?client_name={name}", history=False) as publisher:
        assert publisher.publish(user, "hi") == 0
        assert _named(redis_server, name) == 1
    wait_for(lambda: _named(redis_server, name) == 0, what="the publisher's connection to close")


async def test_async_with_closes_the_publishers_own_client(redis_server: RedisServer, user: str) -> None:
    name = f"own-{user}"
    async with AsyncPublisher(f"{redis_server.url}?client_name={name}", history=False) as publisher:
        assert await publisher.publish(user, "hi") == 0
        assert await in_thread(lambda: _named(redis_server, name))() == 1
    await eventually(in_thread(lambda: _named(redis_server, name) == 0))


def test_with_closes_the_publisher_when_the_body_raises(redis_server: RedisServer, user: str) -> None:
    name = f"own-{user}"
    with pytest.raises(ZeroDivisionError), Publisher(f"{redis_server.url}?client_name={name}") as publisher:
        publisher.publish(user, "x")
        _ = 1 / 0
    wait_for(lambda: _named(redis_server, name) == 0, what="the publisher's connection to close")


def test_a_client_passed_in_stays_open_after_the_publisher_closes(
    redis_server: RedisServer, user: str
) -> None:
    """The caller made it and may share it: closing the publisher must not drop its connection."""
    client = redis.Redis(port=redis_server.port, socket_timeout=5)
    connection = client.client_id()
    with Publisher(client=client) as publisher:
        publisher.publish(user, "hi")
    publisher.close()  # twice: closing is idempotent
    assert client.client_id() == connection
    assert client.ping()
    client.close()


async def test_an_async_client_passed_in_stays_open_after_the_publisher_closes(
    redis_server: RedisServer, user: str
) -> None:
    client = aioredis.Redis(port=redis_server.port, socket_timeout=5)
    connection = await client.client_id()
    async with AsyncPublisher(client=client) as publisher:
        await publisher.publish(user, "hi")
    await publisher.aclose()
    assert await client.client_id() == connection
    assert await client.ping()
    await client.aclose()


def test_the_distribution_ships_its_type_hints() -> None:
    assert (ROOT / "gateway" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["gateway"]


def _requirements(group: list[str]) -> set[str]:
    return {Requirement(line).name for line in group}


def test_the_core_distribution_needs_only_redis_and_the_server_extra_the_rest() -> None:
    """A backend that only publishes installs redis; ``[server]`` adds the gateway's server, and the
    test extra (what ``make test`` installs) includes it."""
    project = PYPROJECT["project"]
    assert _requirements(project["dependencies"]) == {"redis"}
    server = _requirements(project["optional-dependencies"]["server"])
    assert {"starlette", "uvicorn", "gunicorn", "pyjwt", "prometheus-client"} <= server
    for extra in ("test", "loadtest"):
        assert f"{project['name']}[server]" in project["optional-dependencies"][extra], extra


def _copy_of(distribution: str, into: Path) -> None:
    """Link an installed distribution (its import packages and metadata) into ``into``."""
    from importlib import metadata

    dist = metadata.distribution(distribution)
    site = Path(str(dist.locate_file("")))
    tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    for top in tops:
        if not (into / top).exists() and (site / top).exists():
            (into / top).symlink_to(site / top)


@pytest.mark.timeout(120)
def test_the_light_distribution_publishes_without_the_servers_dependencies(tmp_path: Path) -> None:
    """The project installed without its ``[server]`` extra into a fresh virtualenv, next to redis
    alone (linked from this environment's locked install: no network): the publisher imports and the
    CLI's publish command answers, while starlette, uvicorn, gunicorn and PyJWT are not there."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    for distribution in ("redis", "hiredis"):
        _copy_of(distribution, site)
    # The project as pip builds and installs it, with no dependency at all; built from a copy, so
    # the build leaves nothing in the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "gateway", source / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    install += ["--no-build-isolation", "--disable-pip-version-check", "--target", str(site), str(source)]
    subprocess.run(install, check=True, timeout=90, env={**os.environ, "PIP_NO_CACHE_DIR": "1"})

    probe = (
        "import importlib.util, sys\n"
        f"assert [m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m)] == []\n"
        "from gateway import Publisher, AsyncPublisher, Published, NotReplicated\n"
        "import gateway\n"
        "assert gateway.__file__.startswith(sys.prefix), gateway.__file__\n"
        "from importlib import metadata\n"
        "print(*sorted(str(r) for r in metadata.requires('gateway') if 'extra' not in str(r)), sep='\\n')\n"
    )
    light = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    run = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=light)
    assert run.returncode == 0, run.stderr
    assert [Requirement(r).name for r in run.stdout.splitlines()] == ["redis"]
    help_text = subprocess.run(
        [python, "-m", "gateway", "publish", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=light,
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "usage: python -m gateway publish" in help_text.stdout
    token = subprocess.run(
        [python, "-m", "gateway", "token", "alice"], capture_output=True, text=True, cwd=tmp_path, env=light
    )
    assert token.returncode == 2
    assert token.stderr.strip() == "token: needs the server's dependencies: pip install 'gateway[server]'"
