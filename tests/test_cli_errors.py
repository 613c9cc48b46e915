"""python -m gateway refuses a bad user id in one line with the real reason and exit status 2,
before any Redis is touched; ``token`` refuses exactly the ids the gateway would refuse (401)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import cli
from gateway.admission.auth import Authenticator, AuthError
from gateway.config.settings import Settings
from harness.paths import ROOT
from harness.ports import free_port
from harness.tokens import SECRET, make_token

# A bad id, and a word of the reason the CLI must give for it.
BAD_IDS = [
    ("bad user", "no spaces"),
    ("a{b}", "braces"),
    ("conns:x", "'conns:' is reserved"),
    ("ctl:w1", "'ctl:' is reserved"),
    ("worker:w1", "'worker:' is reserved"),
    ("x" * 257, "1 to 256 characters"),
]


@pytest.mark.parametrize(("user_id", "reason"), BAD_IDS)
@pytest.mark.parametrize(
    "command",
    [
        ["publish", "{user}", "{{}}"],
        ["disconnect", "{user}"],
        ["online", "ok", "{user}"],
        ["connections", "{user}"],
    ],
)
def test_a_bad_user_id_is_one_line_with_its_reason_and_exit_2(
    command: list[str], user_id: str, reason: str
) -> None:
    """Nothing listens at REDIS_URL: an exit 2 (not 1, Redis's) shows the id was refused first."""
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *(part.format(user=user_id) for part in command)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and reason in lines[0] and "printable characters, no spaces" not in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    "user_id", ["alice", "user-42@example.com", "é", *(bad for bad, _ in BAD_IDS), "conns", "a:conns:b"]
)
def test_token_refuses_what_the_gateway_refuses(
    user_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JWT_SECRET_KEY", SECRET)
    monkeypatch.delenv("JWT_ALGORITHM", raising=False)
    gateway = Authenticator(Settings.from_environ({"JWT_SECRET_KEY": SECRET}))
    try:
        gateway.validate(make_token(user_id))
        accepted = True
    except AuthError:
        accepted = False
    status = cli.main(["token", user_id], dev_env_file=tmp_path / "none")
    out, err = capsys.readouterr()
    if accepted:
        assert status == 0 and gateway.validate(out.strip()).user_id == user_id
    else:
        assert status == 2 and out == "" and len(err.splitlines()) == 1 and user_id[:20] in err


def test_token_refuses_a_ttl_the_gateway_would_find_expired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JWT_SECRET_KEY", SECRET)
    assert cli.main(["token", "alice", "--ttl", "-5"], dev_env_file=tmp_path / "none") == 2
    assert capsys.readouterr().err == "token: --ttl must be positive, got -5\n"
