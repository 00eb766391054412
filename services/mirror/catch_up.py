"""Never in the way of training: the hooks a training process calls (they
return at once), the background thread that mirrors progress, and the
catch-up pass that mirrors whatever lags."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import urllib.request
from typing import Any

from services.mirror import deletions, range_tests
from services.mirror.names import enabled
from services.mirror.plumbing import (
    FINISHED_GUARD_S,
    LONG_JOB_S,
    MIRROR_FINISHED_TASK,
    MIRROR_JOB_TASK,
    MirrorBusy,
    finished_keys,
    redis_client,
    send_task,
)
from services.mirror.snapshots import lagging, sweep_ids_of
from services.mirror.sync import mirror_job, mirror_sweep

log = logging.getLogger(__name__)


MIRROR_INTERVAL = 2.0  # seconds between two background passes in a training process


DOWN_BACKOFF = (5.0, 60.0)  # background backoff while MLflow does not answer: start, cap


def mirror_pending(settings: Any, limit: int = 500) -> dict[str, int]:
    """Mirror every job and sweep that lags; return counts (done, busy, failed, left)."""
    counts = {"done": 0, "busy": 0, "failed": 0, "left": 0}
    if not enabled(settings):
        return counts
    carry_out_deletions(settings, limit)  # the runs of deleted jobs and sweeps
    job_ids, sweep_ids = lagging(settings, limit)
    work = [("job", j) for j in job_ids] + [("sweep", s) for s in sweep_ids]
    for kind, item in work:
        try:
            if kind == "job":
                mirror_job(settings, item, finalize=True)
            else:
                mirror_sweep(settings, item, finalize=True)
            counts["done"] += 1
        except MirrorBusy:
            counts["busy"] += 1
        except Exception:
            counts["failed"] += 1
            log.warning("mirror of %s %s failed", kind, item, exc_info=True)
            if not is_up(settings):
                break  # MLflow is down: do not spend a timeout on every item
    for key, value in range_tests.mirror_lagging(settings, limit).items():  # LR range tests
        counts[key] += value
    job_ids, sweep_ids = lagging(settings, limit)
    counts["left"] = len(job_ids) + len(sweep_ids)
    return counts


def carry_out_deletions(settings: Any, limit: int = 500) -> dict[str, int]:
    """Mark the MLflow runs of deleted jobs and sweeps deleted (``mirror.deletions``);
    return counts: runs deleted, deletions that failed, deletions still pending."""
    counts = {"runs": 0, "failed": 0, "left": 0}
    if not enabled(settings):
        return counts
    for deletion in deletions.pending(settings, limit):
        try:
            counts["runs"] += deletions.carry_out(settings, deletion)
        except Exception:
            counts["failed"] += 1
            log.warning("MLflow deletion of %s %s failed", deletion[1], deletion[2], exc_info=True)
            if not is_up(settings):
                break  # MLflow is down: the next pass tries again
    counts["left"] = len(deletions.pending(settings, limit))
    return counts


def is_up(settings: Any, timeout: float = 2.0) -> bool:
    """Return True when the MLflow server answers its health check."""
    try:
        url = settings.mlflow_tracking_uri.rstrip("/") + "/health"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


class _Mirrorer:
    """A daemon thread in a training process that mirrors dirty jobs in the background."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.dirty: dict[str, Any] = {}
        self.first_seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.backoff = 0.0
        self.thread = threading.Thread(target=self._run, name="sweeplab-mlflow-mirror", daemon=True)
        self.thread.start()

    def note(self, settings: Any, job_id: str) -> None:
        with self.lock:
            self.dirty[job_id] = settings
            self.first_seen.setdefault(job_id, time.monotonic())
        self.wake.set()

    def forget(self, job_id: str) -> float:
        """Drop the job; return how long ago its first progress was noted."""
        with self.lock:
            self.dirty.pop(job_id, None)
            since = self.first_seen.pop(job_id, None)
        return 0.0 if since is None else time.monotonic() - since

    def _run(self) -> None:
        while True:
            self.wake.wait()
            # Wait one interval before a pass: it batches the notes of several
            # flushes, and a job that ends meanwhile is left to mirror_job (a
            # short job then costs its training process nothing at all).
            time.sleep(MIRROR_INTERVAL)
            self.wake.clear()
            with self.lock:
                work, self.dirty = self.dirty, {}
            failed = False
            for job_id, settings in work.items():
                try:
                    mirror_job(settings, job_id, finalize=False)
                except MirrorBusy:
                    pass  # someone else is on it; a later note brings us back
                except Exception as exc:
                    failed = True
                    log.info("MLflow mirror of job %s deferred: %s", job_id, exc)
                    with self.lock:
                        self.dirty.setdefault(job_id, settings)
            if failed:
                self.backoff = min(max(self.backoff * 2, DOWN_BACKOFF[0]), DOWN_BACKOFF[1])
                time.sleep(self.backoff * (0.75 + 0.5 * random.random()))
                self.wake.set()
            else:
                self.backoff = 0.0


_mirrorer: _Mirrorer | None = None
_background_lock = threading.Lock()


def _background() -> _Mirrorer:
    global _mirrorer
    if _mirrorer is None or _mirrorer.pid != os.getpid():  # a forked child starts its own
        with _background_lock:
            if _mirrorer is None or _mirrorer.pid != os.getpid():
                _mirrorer = _Mirrorer()
    return _mirrorer


def job_progressed(settings: Any, job_id: str) -> None:
    """Note that a job has new committed epochs; returns at once (a thread mirrors)."""
    if enabled(settings):
        _background().note(settings, job_id)


def job_finished(settings: Any, job_id: str) -> None:
    """Hand the finished job to the mirror; returns at once.

    A job that ran LONG_JOB_S or more gets its own ``sweeplab.mirror_job`` task at
    trial priority (its user watches MLflow). A short one (a sweep's tiny trial)
    joins a Redis set that one low-priority ``sweeplab.mirror_finished`` task
    drains in batches: one Redis round trip here instead of a Celery message and a
    task per trial. Either needs Redis only; a failure is logged, and the periodic
    ``sweeplab.mirror_pending`` task picks the job up later (the database says
    what MLflow lacks).
    """
    if not enabled(settings):
        return
    ran = 0.0
    if _mirrorer is not None and _mirrorer.pid == os.getpid():
        ran = _mirrorer.forget(job_id)
    try:
        if ran >= LONG_JOB_S:
            send_task(settings, MIRROR_JOB_TASK, [job_id], priority=0)
        else:
            note_finished(settings, [job_id])
    except Exception:
        log.warning("could not enqueue the MLflow mirror of job %s", job_id, exc_info=True)


def note_finished(settings: Any, job_ids: list[str], countdown: float = 0) -> None:
    """Add jobs to the finished set; send a ``mirror_finished`` task unless one is due."""
    members, guard = finished_keys(settings)
    pipe = redis_client(settings).pipeline(transaction=False)
    if job_ids:
        pipe.sadd(members, *job_ids)
    pipe.set(guard, "1", nx=True, ex=FINISHED_GUARD_S)
    if pipe.execute()[-1]:
        send_task(settings, MIRROR_FINISHED_TASK, [], countdown=countdown)


#: At most this many jobs, and about this long, per ``mirror_finished`` task: then
#: it sends itself again at low priority, so that queued trials go first.
FINISHED_BATCH = 50
FINISHED_PASS_S = 1.0


def mirror_finished(settings: Any) -> dict[str, Any]:
    """Mirror a batch of the finished set's jobs, then their sweeps' parent runs.

    One pass takes at most FINISHED_BATCH jobs and about FINISHED_PASS_S seconds
    (a task that drained the set while a sweep keeps filling it would hold a
    worker process for the sweep's whole length); what is left, and what comes
    in meanwhile, is the next task's. Jobs whose mirror another process holds go
    back into the set, and so do the ones not reached when MLflow fails (the
    error propagates: the task retries). Returns counts and the sweeps touched
    (``sweeps``), whose parent runs the caller closes once they are final.
    """
    members, guard = finished_keys(settings)
    r = redis_client(settings)
    counts: dict[str, Any] = {"done": 0, "busy": 0, "sweeps": []}
    batch = [m.decode() for m in r.spop(members, FINISHED_BATCH) or []]
    left: list[str] = []
    deadline = time.monotonic() + FINISHED_PASS_S
    try:
        for i, job_id in enumerate(batch):
            if time.monotonic() > deadline:
                left.extend(batch[i:])
                break
            try:
                mirror_job(settings, job_id, finalize=True, then_sweep=False)
            except MirrorBusy:
                left.append(job_id)
                counts["busy"] += 1
            except Exception:
                left.extend(batch[i:])
                raise
            else:
                counts["done"] += 1
        done = [j for j in batch if j not in set(left)]
        counts["sweeps"] = sorted(sweep_ids_of(settings, done)) if done else []
        for sweep_id in counts["sweeps"]:
            # MirrorBusy: its holder, or mirror_pending, closes it; LookupError: deleted
            with contextlib.suppress(MirrorBusy, LookupError):
                # trials still behind (never ran, or busy) go back to the set
                mirror_sweep(settings, sweep_id, finalize=True, lagging_trials=left.extend)
    finally:
        if left:
            r.sadd(members, *left)
    # After a failure the guard stays (until it expires): the retrying task covers
    # what is noted meanwhile, instead of one more task per finished job.
    r.delete(guard)
    if r.scard(members):  # left over, or noted meanwhile: the next pass, behind trials
        # only jobs another process holds: look again in a moment, not at once
        note_finished(settings, [], countdown=0 if counts["done"] else 1.0)
    return counts
