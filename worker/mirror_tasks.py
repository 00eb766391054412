"""Celery tasks that mirror jobs and sweeps to MLflow (thin: ids in, services.mirror does it).

Registered with ``shared_task`` so that whichever Celery app the worker builds
picks them up once it imports this module (``include=["worker.mirror_tasks"]``).
All four are idempotent: the database says what is already in MLflow.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

from celery import shared_task, signals

from services.config import Settings
from services.mirror import catch_up, sync
from services.mirror.names import enabled
from services.mirror.plumbing import (
    LOW_PRIORITY,
    MIRROR_DELETIONS_TASK,
    MIRROR_FINISHED_TASK,
    MIRROR_JOB_TASK,
    MIRROR_PENDING_TASK,
    MIRROR_SWEEP_TASK,
    MirrorBusy,
    send_task,
    warm_up,
)
from services.mirror.snapshots import job_sweep_id, sweep_mirror_final
from worker.ticker import Ticker, start_ticker

log = logging.getLogger(__name__)

RETRY_CAP_S = 300  # back off up to 5 minutes between attempts while MLflow is down
PENDING_GUARD = "sweeplab:mirror_pending:scheduled"
LOW = LOW_PRIORITY


def _backoff(retries: int) -> float:
    return min(RETRY_CAP_S, 2.0 ** min(retries, 10)) * (0.75 + 0.5 * random.random())


def _mirror_or_retry(task: Any, mirror: Callable[[], object], what: str) -> None:
    """Run ``mirror``; on failure retry the task later (soon while another holds the lock)."""
    try:
        mirror()
    except MirrorBusy as exc:
        raise task.retry(exc=exc, countdown=1.0 + random.random(), priority=LOW) from None
    except Exception as exc:
        log.warning("mirror of %s failed (%s); retry %d", what, exc, task.request.retries)
        raise task.retry(exc=exc, countdown=_backoff(task.request.retries), priority=LOW) from None


@shared_task(name=MIRROR_JOB_TASK, bind=True, max_retries=200, acks_late=True)
def mirror_job(self, job_id: str) -> str:
    """Mirror one job to MLflow (epochs, tags, artifacts, status), retrying until it lands."""
    settings = Settings.from_env()
    _mirror_or_retry(
        self, lambda: sync.mirror_job(settings, job_id, finalize=True), f"job {job_id}"
    )
    _follow_sweep(settings, job_id)
    return "mirrored"


@shared_task(name=MIRROR_SWEEP_TASK, bind=True, max_retries=200, acks_late=True)
def mirror_sweep(self, sweep_id: str) -> str:
    """Close a finished sweep's parent run once every trial is mirrored."""
    settings = Settings.from_env()
    if sweep_mirror_final(settings, sweep_id) is True:  # closed already, or deleted
        return "closed"
    _mirror_or_retry(
        self, lambda: sync.mirror_sweep(settings, sweep_id, finalize=True), f"sweep {sweep_id}"
    )
    state = sweep_mirror_final(settings, sweep_id)
    if state is False:  # ended (or ending) but not closed yet: look again shortly
        raise self.retry(countdown=2.0 + random.random(), priority=LOW)
    return "closed" if state else "running"


@shared_task(name=MIRROR_FINISHED_TASK, bind=True, max_retries=200, acks_late=True)
def mirror_finished(self) -> dict[str, Any]:
    """Mirror the short jobs that finished since the last pass (a sweep's trials), in
    batches, then close their sweeps' parent runs once those are final."""
    settings = Settings.from_env()
    counts: dict[str, Any] = {}
    _mirror_or_retry(
        self, lambda: counts.update(catch_up.mirror_finished(settings)), "finished jobs"
    )
    for sweep_id in counts.get("sweeps", []):
        if sweep_mirror_final(settings, sweep_id) is False:
            send_task(settings, MIRROR_SWEEP_TASK, [sweep_id], countdown=2)
    return counts


@shared_task(name=MIRROR_PENDING_TASK, bind=True, acks_late=True)
def mirror_pending(self) -> dict[str, int]:
    """Mirror every job and sweep whose mirror lags (each worker's ticker sends it)."""
    return catch_up.mirror_pending(Settings.from_env())


@shared_task(name=MIRROR_DELETIONS_TASK, bind=True, max_retries=200, acks_late=True)
def mirror_deletions(self) -> dict[str, int]:
    """Mark the MLflow runs of deleted jobs and sweeps deleted, retrying while MLflow is
    down (the periodic catch-up does it too, and forgets each once it is safe)."""
    counts = catch_up.carry_out_deletions(Settings.from_env())
    if counts["failed"]:
        raise self.retry(countdown=_backoff(self.request.retries), priority=LOW)
    return counts


def _follow_sweep(settings: Settings, job_id: str) -> None:
    sweep_id = job_sweep_id(settings, job_id)
    if sweep_id and sweep_mirror_final(settings, sweep_id) is False:
        # The sweep is marked done right after its last trial's job_finished:
        # close its parent run in a moment.
        send_task(settings, MIRROR_SWEEP_TASK, [sweep_id], countdown=2)


@signals.worker_process_init.connect
def _warm_up(**_kwargs) -> None:
    """Import the MLflow client in the background, so that the first mirror is quick."""
    if enabled(Settings.from_env()):
        threading.Thread(target=warm_up, name="sweeplab-mlflow-warm-up", daemon=True).start()


@signals.worker_ready.connect
def _catch_up_at_start(sender=None, **_kwargs) -> None:
    """Catch up on what was not mirrored while no worker, MLflow or Redis was up: at
    start, then every ``mirror_catch_up_seconds`` (a hook whose message was lost, a
    job that finished while Redis was away, is found there)."""
    settings = Settings.from_env()
    if not enabled(settings):
        return
    start_ticker(
        Ticker(
            settings,
            "mirror-catch-up",
            lambda: send_task(settings, MIRROR_PENDING_TASK, []),
            settings.mirror_catch_up_seconds,
            PENDING_GUARD,
        )
    )
