"""Celery tasks: thin, idempotent, ids in; the work is in ``services``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery import shared_task, signals
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.celery_app import RUN_JOB, Dispatcher
from services.config import Settings
from services.db import make_engine, make_session_factory
from services.jobs import LeaseHeldError, execute_job, expired_leases

log = logging.getLogger(__name__)

REQUEUE_EXPIRED = "sweeplab.requeue_expired"


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
def _on_ready(sender: object = None, **_kwargs: object) -> None:
    """Pick up jobs whose worker died (their lease expired) once this worker is up."""
    try:
        app = sender.app  # type: ignore[union-attr]
        app.send_task(REQUEUE_EXPIRED, queue=app.conf.task_default_queue)
    except Exception:
        log.exception("could not schedule %s", REQUEUE_EXPIRED)


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


@shared_task(name=REQUEUE_EXPIRED)
def requeue_expired() -> int:
    """Send ``run_job`` again for running jobs whose lease expired."""
    rt = runtime()
    with rt.sessions() as session:
        ids = expired_leases(session)
        session.commit()
    rt.dispatcher.enqueue_jobs(ids)
    return len(ids)
