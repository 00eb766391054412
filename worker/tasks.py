"""Celery tasks: thin, idempotent, ids in; the work is in ``services``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from celery import shared_task, signals
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.celery_app import RUN_JOB, Dispatcher
from services.config import Settings
from services.db import make_engine, make_session_factory
from services.jobs.lease import LeaseHeldError
from services.jobs.recovery import recover
from services.jobs.run import execute_job

log = logging.getLogger(__name__)

RECOVER = "sweeplab.recover"
RECOVER_GUARD = "sweeplab:recover:scheduled"


@dataclass
class Runtime:
    """Per-process resources, created on first use after the fork."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    dispatcher: Dispatcher


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        settings = Settings.from_env()
        engine = make_engine(settings.database_url)
        _runtime = Runtime(settings, engine, make_session_factory(engine), Dispatcher(settings))
    return _runtime


@signals.worker_process_init.connect
def _after_fork(**_kwargs: object) -> None:
    """Never use the parent's engine or sockets; cap BLAS threads in this process."""
    global _runtime
    if _runtime is not None:
        _runtime.engine.dispose(close=False)
        _runtime = None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the environment variables set in worker.app still apply
        return
    threadpool_limits(limits=Settings.from_env().blas_threads)


class Ticker:
    """Call ``send`` every ``period`` seconds from a thread of the worker's main process.

    A thread rather than a task that schedules its own successor: a countdown
    message lives in Redis, and if Redis loses its data (a restart without
    persistence) or is away when the successor is sent, the chain is gone and
    nothing would ever run again. A Redis key taken with SET NX (``guard``)
    keeps it to one send per period however many workers tick; the first send,
    at start, skips it (this worker may replace a dead one).
    """

    def __init__(self, settings: Settings, name: str, send: Callable[[], None], period: float,
                 guard: str):  # fmt: skip
        self.settings, self.name, self.send = settings, name, send
        self.period, self.guard = period, f"{guard}:{settings.celery_queue}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"sweeplab-{name}", daemon=True)

    def _loop(self) -> None:
        client = redis.Redis.from_url(
            self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
        first = True
        while True:
            try:
                px = max(1, int(self.period * 1000) - 100)
                if first or client.set(self.guard, 1, nx=True, px=px):
                    self.send()
                first = False
            except Exception as err:  # Redis is away: try again next period
                log.warning("could not schedule %s: %s", self.name, err)
            if self.stop.wait(self.period):
                client.close()
                return


_tickers: list[Ticker] = []


def start_ticker(ticker: Ticker) -> None:
    """Start ``ticker``; it stops when the worker shuts down."""
    _tickers.append(ticker)
    ticker.thread.start()


@signals.worker_ready.connect
def _on_ready(sender: Any = None, **_kwargs: Any) -> None:
    """Ask for recover passes (jobs of dead workers, lost messages, stalled sweeps)."""
    settings = Settings.from_env()
    app = sender.app
    start_ticker(Ticker(
        settings, "recover", lambda: app.send_task(RECOVER, queue=settings.celery_queue),
        settings.recover_seconds, RECOVER_GUARD,
    ))  # fmt: skip


@signals.worker_shutting_down.connect
def _on_shutdown(**_kwargs: Any) -> None:
    for ticker in _tickers:
        ticker.stop.set()



@shared_task(name=RUN_JOB, bind=True, acks_late=True, max_retries=None)
def run_job(self, job_id: str) -> str:
    """Train one job; a finished job is a no-op, a job running elsewhere is retried later."""
    rt = runtime()
    try:
        return execute_job(
            settings=rt.settings,
            session_factory=rt.sessions,
            dispatcher=rt.dispatcher,
            job_id=job_id,
        )
    except LeaseHeldError as err:
        raise self.retry(countdown=err.retry_in, max_retries=None) from None


@shared_task(name=RECOVER)
def recover_jobs() -> dict[str, int]:
    """Re-send lost and orphaned jobs, fail hopeless ones, advance stalled sweeps."""
    rt = runtime()
    done = recover(settings=rt.settings, session_factory=rt.sessions, dispatcher=rt.dispatcher)
    if any(done):
        log.warning("recover: %s", {name: len(ids) for name, ids in done._asdict().items()})
    return {name: len(ids) for name, ids in done._asdict().items()}
