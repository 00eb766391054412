"""The stack's commands: up, down and status, with the environment the services run in."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import update

from services.config import Settings
from services.db import make_engine, make_session_factory
from services.db.models import Job, utcnow
from services.jobs.lease import worker_name
from services.stack.flower import FLOWER_HOST, flower_port, flower_status, start_flower
from services.stack.processes import (
    LOCAL_HOSTS,
    ensure_redis,
    find_executable,
    group_members,
    http_json,
    http_ok,
    port_taken,
    record_pid,
    recorded_pid,
    redis_ping,
    running_pid,
    spawn,
    stop,
    var_dir,
    wait_for,
)
from services.stack.tokens import ensure_local_token, read_local_token, token_file

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
API_HOST = "127.0.0.1"
API_PORT = int(os.environ.get("SWEEPLAB_API_PORT") or 8000)  # where `up` serves the API
MLFLOW_HOST, MLFLOW_PORT = "127.0.0.1", 5000
SWEEPLAB_OK = {"status": "ok", "service": "sweeplab"}  # what our API's /healthz says
# How long `down` waits for the worker's warm shutdown (a mini-batch, then the job's
# release: SHUTDOWN_WRITE_SECONDS) before SIGKILL; as compose's stop_grace_period.
WORKER_STOP_SECONDS = 60.0
# Flower keeps nothing to save (not --persistent), and after SIGTERM it can wait
# ~20 s on its threads before exiting: SIGKILL after this.
FLOWER_STOP_SECONDS = 3.0


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
        [find_executable("alembic"), "upgrade", "head"],
        env=env,
        check=True,
        cwd=_repo_root(),
        stdout=subprocess.DEVNULL,
    )


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def up(*, workers: int = 2, mlflow: bool = True) -> None:
    """Start every service that is not running yet."""
    var = var_dir()
    env = service_env()
    log = var / "log"

    if not redis_ping(env["REDIS_URL"]):
        proc = ensure_redis(env["REDIS_URL"], var / "redis", log / "redis.log")
        if proc is not None:
            record_pid("redis", proc)
            print(f"started redis-server (pid {proc.pid})")
    else:
        print(f"redis: already answering at {env['REDIS_URL']}")

    migrate(env)
    print("database: migrated to head")
    token = ensure_local_token(env)
    print(f"admin token: in {token_file()} (readable by you only; local tools use it)")

    if mlflow and env.get("MLFLOW_TRACKING_URI"):
        _up_mlflow(env, var)

    api = f"http://{API_HOST}:{API_PORT}"
    if port_taken(API_HOST, API_PORT, lambda: (http_json(api + "/healthz") or {}) == SWEEPLAB_OK):
        print(f"api: already running on {API_HOST}:{API_PORT}")
    else:
        # The gunicorn workers' request metrics go to files here, summed at each
        # scrape (api/metrics.py); counts start again with each start of the API.
        metrics_dir = var / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        argv = [
            find_executable("gunicorn"),
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
        proc = spawn(argv, log / "api.log", dict(env, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)))
        record_pid("api", proc)
        wait_for(lambda: http_ok(f"http://{API_HOST}:{API_PORT}/healthz"), "api", 30, proc)
        print(f"started api on http://{API_HOST}:{API_PORT} (pid {proc.pid})")

    if running_pid("worker"):
        print("worker: already running")
    else:
        queue = env.get("SWEEPLAB_QUEUE", "sweeplab")
        argv = [
            find_executable("celery"),
            "-A",
            "worker.app",
            "worker",
            "--concurrency",
            str(workers),
            "--queues",  # trials, and recover passes on their own queue
            f"{queue},{queue}.control",
            "--loglevel",
            "INFO",
            "--hostname",
            f"sweeplab-{os.getpid()}@%h",
        ]
        proc = spawn(argv, log / "worker.log", dict(env, PYTHONPATH=str(_repo_root())))
        record_pid("worker", proc)
        print(f"started worker with {workers} processes (pid {proc.pid})")
    up_flower(env, token, log)
    wait_for(lambda: http_ok(f"http://{API_HOST}:{API_PORT}/readyz"), "api /readyz", 30)


def _up_mlflow(env: dict[str, str], var: Path) -> None:
    parts = urllib.parse.urlsplit(env["MLFLOW_TRACKING_URI"])
    host, port = parts.hostname or MLFLOW_HOST, parts.port or MLFLOW_PORT
    if parts.scheme not in ("http", "https") or host not in LOCAL_HOSTS:
        print(f"mlflow: using {env['MLFLOW_TRACKING_URI']} as given")
        return
    if port_taken(
        host,
        port,
        lambda: http_ok(f"http://{host}:{port}/api/2.0/mlflow/experiments/search?max_results=1"),
    ):
        print(f"mlflow: already running on {host}:{port}")
        return
    from services.mirror import server as mlflow_server  # late: needs the server extra only here

    argv, mlflow_env = mlflow_server.server_command(host, port, var)
    proc = spawn(argv, var / "log" / "mlflow.log", dict(env, **mlflow_env))
    record_pid("mlflow", proc)
    mlflow_server.wait_ready(f"http://{host}:{port}", timeout=120)
    print(f"started mlflow server on http://{host}:{port} (pid {proc.pid})")


def up_flower(env: dict[str, str], token: str, log: Path) -> subprocess.Popen | None:
    """Start Flower on 127.0.0.1 (``SWEEPLAB_FLOWER_PORT``, 5555) unless it runs;
    see services/stack/flower.py for its access rule."""
    port = flower_port()
    url = f"http://{FLOWER_HOST}:{port}"
    if port_taken(FLOWER_HOST, port, lambda: flower_status(url, token) == 200):
        print(f"flower: already running on {url}")
        return None
    proc = start_flower(
        dict(env, PYTHONPATH=str(_repo_root())),
        token,
        host=FLOWER_HOST,
        port=port,
        log_file=log / "flower.log",
    )
    record_pid("flower", proc)
    print(f"started flower on {url} (pid {proc.pid}; user admin, the admin token as password)")
    return proc


def down() -> None:
    """Stop what ``up`` started, workers first; the jobs they were training are
    released, so that the next ``up`` resumes them at once.

    The worker's process group gets SIGTERM (worker/shutdown.py): each job stops at
    its next mini-batch and releases itself; the worker has WORKER_STOP_SECONDS
    before SIGKILL, and a job still held by one of its processes then (a job it
    could not release: the database away) is released here."""
    for name in ("flower", "worker", "api", "mlflow", "redis"):
        pgid = recorded_pid(name) if name == "worker" else None
        members = group_members(pgid) if pgid is not None else []
        timeout = {"worker": WORKER_STOP_SECONDS, "flower": FLOWER_STOP_SECONDS}.get(name, 20.0)
        print(f"{name}: {'stopped' if stop(name, timeout=timeout) else 'not started by sweeplab'}")
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
    if running_pid("worker"):
        worker = "running"
    elif recorded_pid("worker") is not None:
        worker = "DEAD (it was started here; `make up` starts it again)"
    else:
        worker = "not started here"
    print(f"worker  {worker}")
    flower = f"http://{FLOWER_HOST}:{flower_port()}"
    answer = flower_status(flower, read_local_token())
    shown = {200: "up", 401: "up (the admin token in var/ is not its password)", None: "down"}
    print(f"flower  {shown.get(answer, f'answers {answer}')}  {flower}")
    return 0 if http_ok(api + "/readyz") else 1
