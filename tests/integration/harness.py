"""A real stack for integration tests: Redis, a database, Celery worker processes, the API.

Each :class:`Stack` gets a fresh database (a SQLite file, or a PostgreSQL
database created for it), its own Celery queue and a Redis database number
that it claims for itself (:func:`claim_redis_db`), so that two suites running
at once on one machine (or one Redis) never share keys: the recover and
catch-up locks, Celery's unacknowledged-message hash, cancel flags.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import redis
from sqlalchemy import select

from api import create_app
from services.config import Settings
from services.db import Job, JobMetric, make_engine, make_session_factory, upgrade
from services.db.models import TERMINAL_STATUSES
from tests.auth_support import authorize, new_token

REPO = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
T = TypeVar("T")

PG_ADMIN_URL = os.environ.get(
    "SWEEPLAB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


REDIS_DB_CLAIM = "sweeplab-tests:db:{n}"  # in database 0: who uses database n
REDIS_DB_CLAIM_TTL = 6 * 3600  # a suite that died without releasing frees it after this


def _owner_alive(owner: bytes | None) -> bool:
    """Whether the claim's owner (``host:pid``) still runs; an owner elsewhere counts as alive."""
    if not owner:
        return False
    host, _, pid = owner.decode().rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def claim_redis_db(redis_base: str) -> tuple[str, Callable[[], None]]:
    """Claim a Redis database (1-15) no other running suite uses; return its URL and a release.

    The claim is a key in database 0, set only if absent (``SET NX``), that names
    this process; a claim whose process has died is taken over. The claimed
    database is emptied first (a dead suite may have left keys in it).
    """
    base = redis_base.rsplit("/", 1)[0]
    me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    admin = redis.Redis.from_url(f"{base}/0")
    try:
        for n in random.sample(range(1, 16), 15):
            key = REDIS_DB_CLAIM.format(n=n)
            owner = admin.get(key)
            if owner is not None and not _owner_alive(owner.rsplit(b":", 1)[0]):
                admin.delete(key)  # its suite died without releasing it
            if admin.set(key, me, nx=True, ex=REDIS_DB_CLAIM_TTL):
                break
        else:
            raise RuntimeError("every Redis database 1-15 is claimed by another running suite")
    finally:
        admin.close()
    url = f"{base}/{n}"
    with redis.Redis.from_url(url) as r:
        r.flushdb()

    def release() -> None:
        with suppress(redis.RedisError), redis.Redis.from_url(f"{base}/0") as r:
            if r.get(key) == me.encode():
                r.delete(key)

    return url, release


def redis_ok(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(_pg_dsn(PG_ADMIN_URL), connect_timeout=3):
            return True
    except Exception:
        return False


def require_postgres() -> None:
    """Skip without PostgreSQL, unless SWEEPLAB_REQUIRE_POSTGRES says it must be there."""
    import pytest

    if not postgres_available():
        if os.environ.get("SWEEPLAB_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (SWEEPLAB_REQUIRE_POSTGRES) but not reachable")
        pytest.skip("PostgreSQL not reachable")


def create_pg_database() -> str:
    """Create an empty database on the test server; return its SQLAlchemy URL."""
    import psycopg

    name = f"sweeplab_it_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_dsn(PG_ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(_pg_dsn(PG_ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Stack:
    """Fresh database + Celery workers on a private queue + a Flask test client."""

    def __init__(self, backend: str, workdir: Path, redis_base: str):
        self.backend = backend
        self.workdir = workdir
        if backend == "sqlite":
            self.database_url = f"sqlite:///{workdir / 'sweeplab.db'}"
        else:
            self.database_url = create_pg_database()
        upgrade(self.database_url)
        self.redis_url, self._release_redis = claim_redis_db(redis_base)
        self.queue = f"sweeplab-it-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "SWEEPLAB_QUEUE": self.queue,
            "MLFLOW_TRACKING_URI": "",
            "SWEEPLAB_LEASE_SECONDS": "3",
            "SWEEPLAB_CHECKPOINT_EVERY": "2",
            "SWEEPLAB_FLUSH_SECONDS": "0.1",
            "SWEEPLAB_BLAS_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
        self.settings = Settings.from_env(self.env)
        self.engine = make_engine(self.database_url)
        self.sessions = make_session_factory(self.engine)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.app = create_app(self.settings)
        self.token = new_token(self.sessions)  # an admin's
        self.client = authorize(self.app.test_client(), self.token)

    # --- processes

    def start_worker(self, concurrency: int = 2) -> subprocess.Popen[bytes]:
        name = f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}"
        log = self.workdir / f"{name}.log"
        argv = [
            CELERY,
            "-A",
            "worker.app",
            "worker",
            "--concurrency",
            str(concurrency),
            "-P",
            "prefork",
            "-Q",
            f"{self.queue},{self.queue}.control",  # trials, and recover passes
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "INFO",
        ]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(proc)
        wait_for(
            lambda: b" ready." in log.read_bytes() or proc.poll() is not None,
            60,
            f"worker {name} to start",
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text()[-4000:] for p in sorted(self.workdir.glob("w*.log")))

    def close(self) -> None:
        for proc in self.workers:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        with suppress(redis.RedisError):
            r = redis.Redis.from_url(self.redis_url)
            r.flushdb()  # the database is ours alone (claim_redis_db)
            r.close()
        self._release_redis()
        self.app.extensions["sweeplab"].dispatcher.close()
        self.app.extensions["sweeplab"].engine.dispose()
        self.engine.dispose()
        if self.backend == "postgresql":
            drop_pg_database(self.database_url)

    # --- HTTP and rows

    def post(self, path: str, body: Any) -> dict[str, Any]:
        response = self.client.post(f"/api/v1{path}", json=body)
        assert response.status_code in (201, 202), response.get_json()
        return response.get_json()

    def get(self, path: str) -> dict[str, Any]:
        response = self.client.get(f"/api/v1{path}")
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def job(self, job_id: str) -> Job:
        with self.sessions() as session:
            return session.get(Job, job_id)

    def sweep_jobs(self, sweep_id: str) -> list[Job]:
        with self.sessions() as session:
            stmt = select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_index)
            return list(session.scalars(stmt))

    def epochs(self, job_id: str) -> list[int]:
        with self.sessions() as session:
            stmt = select(JobMetric.epoch).where(JobMetric.job_id == job_id)
            return sorted(session.scalars(stmt))

    def wait_job(self, job_id: str, timeout: float = 60) -> Job:
        try:
            return wait_for(
                lambda: (j := self.job(job_id)).status in TERMINAL_STATUSES and j,
                timeout,
                f"job {job_id}",
            )
        except AssertionError:
            print(self.logs())
            raise

    def wait_sweep(self, sweep_id: str, timeout: float = 120) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            sweep = self.get(f"/sweeps/{sweep_id}")
            active = sweep["counts"]["queued"] + sweep["counts"]["running"]
            return sweep if sweep["status"] != "running" and not active else None

        try:
            return wait_for(done, timeout, f"sweep {sweep_id}", interval=0.2)
        except AssertionError:
            print(self.logs())
            raise


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end before a start at the same time)."""
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
        key=lambda ev: (ev[0], ev[1]),
    )
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak
