"""docs/publishing.md's "The history publish from any language": its Node snippet, run as
printed against a real redis-server, publishes what the gateway reads as a history message,
returns a position the gateway parses and resumes from, and leaves the history where the
Python publisher goes on."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway import keys, wire
from gateway.history.position import parse_position
from gateway.history.reader import HistoryReader, Reading
from gateway.publishing.publisher import Publisher
from harness.paths import ROOT
from harness.redis_server import RedisServer

SECTION = "## The history publish from any language"


def _snippet() -> str:
    text = (ROOT / "docs" / "publishing.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    [code] = re.findall(r"```js\n(.*?)```", section, re.S)
    return code


NodePublish = Callable[[str, str], subprocess.CompletedProcess[str]]


@pytest.fixture
def node_publish(tmp_path: Path, redis_server: RedisServer) -> NodePublish:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    (tmp_path / "publish-with-history.mjs").write_text(_snippet())
    driver = tmp_path / "run.mjs"
    driver.write_text(
        'import { publishWithHistory } from "./publish-with-history.mjs";\n'
        "const [port, user, payload] = process.argv.slice(2);\n"
        'const where = { host: "127.0.0.1", port: Number(port) };\n'
        "const published = await publishWithHistory({ ...where, user, payload });\n"
        "console.log(JSON.stringify(published));\n"
    )

    def publish(user: str, payload: str) -> subprocess.CompletedProcess[str]:
        # From the repository root, as the snippet's default path to the script expects.
        return subprocess.run(
            ["node", str(driver), str(redis_server.port), user, payload],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    return publish


def _published(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


async def test_the_node_snippet_publishes_with_history(
    node_publish: NodePublish, redis_server: RedisServer, user: str
) -> None:
    payload = '{"hello":"wörld"}'
    with redis_server.client() as client, client.pubsub() as pubsub:
        pubsub.subscribe(f"ws:{user}")
        assert pubsub.get_message(timeout=5) is not None
        first = _published(node_publish(user, payload))
        second = _published(node_publish(user, "two"))
        frames = [pubsub.get_message(timeout=5) for _ in range(2)]
    assert first["receivers"] == 1
    position = parse_position(str(first["position"]))
    assert position is not None, first
    epoch, offset = position.epoch, position.offset
    assert second["position"] == f"{offset + 1}-{epoch}"
    assert [frame["data"] for frame in frames if frame] == [
        wire.history_message(epoch, offset, payload.encode()),
        wire.history_message(epoch, offset + 1, b"two"),
    ]
    # The Python publisher goes on in the same epoch; the gateway's reader replays after a position.
    with Publisher(redis_server.url) as publisher:
        assert publisher.publish(user, "three").position == f"{offset + 2}-{epoch}"
    async with aioredis.Redis.from_url(redis_server.url) as client:
        reading = await HistoryReader(client, "ws", replay_cap=100).read(user, epoch, offset)
    assert reading == Reading("ok", epoch, offset + 2, [b"two", b"three"])
    ttl = redis_server.client().pttl(keys.history_key("ws", user))
    assert 0 < ttl <= 300_000


def test_a_redis_error_is_raised_not_hung(
    node_publish: NodePublish, redis_server: RedisServer, user: str
) -> None:
    """A key of the wrong type: the script fails and the snippet rejects with Redis's error."""
    redis_server.client().set(keys.history_meta_key("ws", user), "not a hash")
    result = node_publish(user, "x")
    assert result.returncode != 0 and "WRONGTYPE" in result.stderr
