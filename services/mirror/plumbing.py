"""Per-process plumbing of the mirror: MLflow clients, database sessions, Redis,
the Celery app that sends mirror tasks, and the mirror locks (one pass per job
or sweep at a time, across processes and hosts)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from services.celery_app import make_celery
from services.db import make_engine, make_session_factory
from services.holders import died_here

MIRROR_JOB_TASK = "sweeplab.mirror_job"


MIRROR_PENDING_TASK = "sweeplab.mirror_pending"


MIRROR_SWEEP_TASK = "sweeplab.mirror_sweep"


MIRROR_FINISHED_TASK = "sweeplab.mirror_finished"


def finished_keys(settings: Any) -> tuple[str, str]:
    """Redis keys of the short jobs that finished and wait for their final mirror (a
    set), and of the guard that says a ``mirror_finished`` task is on its way."""
    base = f"sweeplab:{settings.celery_queue}:mirror:finished"
    return base, f"{base}:scheduled"


#: A guard older than this is taken for lost (its task, or the send, failed).
FINISHED_GUARD_S = 60


MIRROR_DELETIONS_TASK = "sweeplab.mirror_deletions"


HTTP_TIMEOUT_S = "5"


# Celery on Redis serves priority 0 (run_job's default) before 9: a mirror task
# then never holds up the next trial, it fills a worker slot that would idle.
# Jobs that ran at least LONG_JOB_S are mirrored at trial priority instead: their
# final mirror (~0.5 s) is small beside them, and their users watch MLflow.
LOW_PRIORITY = 9


LONG_JOB_S = 20.0


LOCK_SECONDS = 120  # a pass that takes longer loses its lock (and is simply redone)


_plumbing_lock = threading.Lock()


_sessions: dict[tuple[int, str], Any] = {}


_clients: dict[tuple[int, str], Any] = {}


_redis: dict[tuple[int, str], Any] = {}


_celery: dict[tuple[int, str], Any] = {}


def _configure_http() -> None:
    # Short timeouts and no urllib3 retry loop: a mirror call that fails is
    # redone by our own schedule, never by blocking a caller for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    # set_terminated would print "View run ..." to the worker's stdout for every run.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def mlflow_client(settings: Any) -> Any:
    key = (os.getpid(), settings.mlflow_tracking_uri)
    with _plumbing_lock:
        if key not in _clients:
            _configure_http()
            from mlflow.tracking import MlflowClient  # late: heavy (mlflow)

            _clients[key] = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        return _clients[key]


def session_factory_for(settings: Any) -> Any:
    key = (os.getpid(), settings.database_url)
    with _plumbing_lock:
        if key not in _sessions:
            _sessions[key] = make_session_factory(make_engine(settings.database_url))
        return _sessions[key]


def redis_client(settings: Any) -> Any:
    key = (os.getpid(), settings.redis_url)
    with _plumbing_lock:
        if key not in _redis:
            _redis[key] = redis.Redis.from_url(
                settings.redis_url, socket_timeout=5, socket_connect_timeout=2
            )
        return _redis[key]


def celery_for(settings: Any) -> Any:
    key = (os.getpid(), settings.redis_url)
    with _plumbing_lock:
        if key not in _celery:
            _celery[key] = make_celery(settings)
        return _celery[key]


def send_task(
    settings: Any,
    name: str,
    args: Sequence[Any] = (),
    countdown: float = 0,
    priority: int = LOW_PRIORITY,
) -> None:
    """Send a mirror task by name on the sweeplab queue (behind trials by default)."""
    celery_for(settings).send_task(
        name,
        args=list(args),
        queue=settings.celery_queue,
        countdown=countdown or None,
        priority=priority,
    )


def warm_up() -> None:
    """Import the MLflow client and matplotlib now (about 2 s of CPU), not in a first mirror."""
    _configure_http()
    import mlflow.tracking  # noqa: F401  late: heavy (mlflow), warmed up on purpose
    from mlflow.entities import Metric  # noqa: F401  late: heavy (mlflow), warmed up on purpose

    from services import plots  # noqa: F401  late: heavy (matplotlib), warmed up on purpose


class MirrorBusy(RuntimeError):
    """Another process is mirroring the same job or sweep right now."""


_local_locks: dict[str, threading.Lock] = {}


# Delete the key only if it still holds the token read (a compare-and-delete).
_DELETE_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


def _lock_token() -> bytes:
    """A lock's token names its holder: ``host:pid/random``."""
    return f"{socket.gethostname()}:{os.getpid()}/{uuid.uuid4().hex}".encode()


def _held_by_the_dead(token: bytes | None) -> bool:
    """Whether ``token`` names a process of this host that no longer exists (killed
    while mirroring: its lock would hold for up to ``LOCK_SECONDS``)."""
    return died_here((token or b"").decode(errors="replace").split("/", 1)[0])


@contextlib.contextmanager
def mirror_lock(settings: Any, name: str) -> Iterator[None]:
    """Hold the mirror lock ``name`` (process-local and in Redis) or raise MirrorBusy.
    A lock left by a process of this host that died is taken over at once."""
    with _plumbing_lock:
        local = _local_locks.setdefault(name, threading.Lock())
    if not local.acquire(blocking=False):
        raise MirrorBusy(name)
    try:
        client, key = redis_client(settings), f"sweeplab:mirror:{name}"
        lock = client.lock(key, timeout=LOCK_SECONDS, blocking=False)
        token = _lock_token()
        if not lock.acquire(blocking=False, token=token):
            held = client.get(key)
            if not _held_by_the_dead(held):
                raise MirrorBusy(name)
            client.eval(_DELETE_IF, 1, key, held)
            if not lock.acquire(blocking=False, token=token):
                raise MirrorBusy(name)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # expired: the next pass redoes the work
                lock.release()
    finally:
        local.release()


@contextlib.contextmanager
def session_scope(settings: Any) -> Iterator[Any]:
    session = session_factory_for(settings)()
    try:
        yield session
    finally:
        session.close()
