"""What the stack benchmarks share: free ports, waiting, Celery workers started and
stopped as process groups, throwaway databases on a PostgreSQL server, and the tiny
trial whose service overhead they measure."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[1]
CELERY = str(Path(sys.executable).with_name("celery"))


def tiny_trial(name: str, epochs: int, n_samples: int) -> dict[str, Any]:
    """A small job spec (xor, 4 tanh units): with a few dozen samples it trains in about
    a millisecond, so that what is left of a trial's time in the service is the service's."""
    return {
        "name": name,
        "dataset": {"name": "xor", "n_samples": n_samples, "seed": 0, "validation_split": 0.25},
        "architecture": {"layers": [{"units": 4, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": 0.1, "epochs": epochs, "batch_size": 16},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """``check()``'s first truthy value; ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def start_worker(
    env: dict[str, str], queue: str, log: Path, name: str, concurrency: int = 2
) -> subprocess.Popen[bytes]:
    """A Celery worker on ``queue`` and its control queue, in its own process group,
    as ``make up`` starts one; returns once it is ready."""
    argv = [
        *(CELERY, "-A", "worker.app", "worker", "--concurrency", str(concurrency)),
        *("-P", "prefork", "-Q", f"{queue},{queue}.control", "-n", f"{name}@%h"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_for(lambda: b" ready." in log.read_bytes() or proc.poll() is not None, 60, name)
    if proc.poll() is not None:
        raise RuntimeError(f"worker {name} did not start:\n{log.read_text()[-2000:]}")
    return proc


def stop_workers(procs: list[subprocess.Popen[bytes]], sig: int = signal.SIGTERM) -> None:
    """Signal each worker's process group, wait (a warm shutdown), then kill what is left."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def create_pg_database(admin_url: str, prefix: str = "sweeplab_bench") -> str:
    """A new empty database on ``admin_url``'s server; its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_dsn(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(_pg_dsn(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
