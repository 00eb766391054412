"""Celery tasks: thin, idempotent, ids in; the work is in ``services``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery import shared_task, signals
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.celery_app import RUN_JOB, Dispatcher
from services.config import Settings
from services.db import make_engine, make_session_factory
from services.jobs import LeaseHeldError, execute_job
from services.sweeps import recover

log = logging.getLogger(__name__)

RECOVER = "sweeplab.recover"
RECOVER_GUARD = "sweeplab:recover:scheduled"
RECOVER_EVERY_S = 30.0


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


@signals.worker_ready.connect
def _on_ready(sender: Any = None, **_kwargs: Any) -> None:
    """Pick up jobs whose worker died (their lease expired) once this worker is up."""
    try:
        app = sender.app
        app.send_task(RECOVER, queue=app.conf.task_default_queue)
    except Exception:
        log.exception("could not schedule %s", RECOVER)


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


@shared_task(name=RECOVER, bind=True)
def recover_jobs(self) -> dict[str, int]:
    """Re-send jobs of dead workers, advance stalled sweeps; repeat every 30 s (one chain)."""
    rt = runtime()
    expired, created = recover(
        settings=rt.settings, session_factory=rt.sessions, dispatcher=rt.dispatcher
    )
    if expired or created:
        log.warning("recovered %d expired jobs, %d new sweep trials", len(expired), len(created))
    # One pending follow-up per queue, however many workers scheduled one.
    guard = f"{RECOVER_GUARD}:{rt.settings.celery_queue}"
    if rt.dispatcher.redis.set(guard, 1, nx=True, ex=int(RECOVER_EVERY_S) - 1):
        self.apply_async(countdown=RECOVER_EVERY_S, queue=rt.settings.celery_queue)
    return {"expired": len(expired), "created": len(created)}
