"""Celery tasks: thin, idempotent, ids in; the work is in ``services``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celery import shared_task, signals
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from threadpoolctl import threadpool_limits

from services.celery_app import RECOVER, RUN_JOB, RUN_PACK, Dispatcher, control_queue
from services.config import Settings
from services.db import make_engine, make_session_factory
from services.jobs.execute import RELEASED, run_chain, run_pack_chain
from services.jobs.lease import LeaseHeldError
from services.jobs.pack_run import ORPHANED
from services.jobs.recovery import recover
from services.lr_range.recovery import recover_range_tests
from worker.ticker import Ticker, start_ticker

log = logging.getLogger(__name__)

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
    threadpool_limits(limits=Settings.from_env().blas_threads)


@signals.worker_ready.connect
def _on_ready(sender: Any = None, **_kwargs: Any) -> None:
    """Ask for recover passes (jobs of dead workers, lost messages, stalled sweeps)."""
    settings = Settings.from_env()
    app = sender.app
    start_ticker(
        Ticker(
            settings,
            "recover",
            lambda: app.send_task(RECOVER, queue=control_queue(settings)),
            settings.recover_seconds,
            RECOVER_GUARD,
        )
    )


@shared_task(name=RUN_JOB, bind=True, acks_late=True, max_retries=None)
def run_job(self, job_id: str) -> str:
    """Train one job (then the trials its sweep creates next, for a few seconds); a finished
    job is a no-op, a copy of a job running elsewhere is dropped."""
    rt = runtime()
    try:
        status = run_chain(
            settings=rt.settings,
            session_factory=rt.sessions,
            dispatcher=rt.dispatcher,
            job_id=job_id,
        )
    except LeaseHeldError as err:
        if err.holder_died_here:
            # The process that ran the job died on this host and the job could not be
            # taken over at once (take_job): its attempts are used up. Come back when
            # its lease has run out, to find it ended by then or to end it.
            raise self.retry(countdown=err.retry_in) from None
        # A duplicate (a copy Celery requeued when a worker process died, an old
        # re-send): ack it now rather than retry it and hold a prefetch slot. Nothing
        # is lost if the lease's holder dies later: its lease expires and the recover
        # pass sends the job again (expired_leases), since no copy of it waits then.
        log.info(
            "run_job %s: duplicate dropped; it runs elsewhere (lease: %.0fs)", job_id, err.retry_in
        )
        return "duplicate"
    if status == RELEASED:
        # A warm shutdown stopped it at a batch boundary: another worker resumes it now.
        rt.dispatcher.enqueue_jobs([job_id])
    return status


@shared_task(name=RUN_PACK, bind=True, acks_late=True, max_retries=None)
def run_pack(self, job_ids: list[str]) -> dict[str, str]:
    """Train a pack of trials together (then what their sweep creates next, for a few
    seconds); trials finished or running elsewhere are left out of the pack."""
    rt = runtime()
    statuses = run_pack_chain(
        settings=rt.settings,
        session_factory=rt.sessions,
        dispatcher=rt.dispatcher,
        job_ids=list(job_ids),
    )
    released = [job_id for job_id, status in statuses.items() if status == RELEASED]
    if released:  # a warm shutdown stopped the pack: another worker resumes it now
        rt.dispatcher.enqueue_units([released])
    orphaned = [job_id for job_id, status in statuses.items() if status == ORPHANED]
    if orphaned:
        # Trials whose process died on this host that could not be taken over at once
        # (take_job: their attempts are used up): come back once their leases ran out.
        raise self.retry(args=[orphaned], countdown=rt.settings.lease_seconds + 0.5)
    return statuses


@shared_task(name=RECOVER)
def recover_jobs() -> dict[str, int]:
    """Re-send lost and orphaned jobs, fail hopeless ones, advance stalled sweeps."""
    rt = runtime()
    done = recover(settings=rt.settings, session_factory=rt.sessions, dispatcher=rt.dispatcher)
    if done.expired or done.requeued or done.created or done.failed:  # not news: waiting
        log.warning("recover: %s", {name: len(ids) for name, ids in done._asdict().items()})
    tests = recover_range_tests(
        settings=rt.settings, session_factory=rt.sessions, dispatcher=rt.dispatcher
    )
    if tests["sent"] or tests["failed"]:
        log.warning("recover: range tests %s", {name: len(ids) for name, ids in tests.items()})
    return {name: len(ids) for name, ids in done._asdict().items()}
