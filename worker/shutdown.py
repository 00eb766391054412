"""Warm shutdown: a SIGTERM stops the job at its next mini-batch and releases it.

Celery's warm shutdown (SIGTERM to the main process: ``docker compose stop``,
a redeploy) only stops taking messages and waits for the running tasks; with
jobs that train for hours, Docker's grace period runs out and the job's worker
is killed, which costs the job an attempt. And the prefork pool's children
reset SIGTERM to its default (``celery.concurrency.prefork.process_initializer``),
so a SIGTERM sent to the whole process group (``make down``) kills a child at
once, mid-batch.

A handler installed in ``worker_process_init`` does not last: after that
signal, billiard's ``Worker.after_fork`` calls ``reset_signals``, which replaces
any SIGTERM handler with its ``_shutdown_cleanup`` (a ``SystemExit``, reported
as "exited with signal 15"). So the handler is installed when a child starts a
task (``task_prerun``, in the child), on top of billiard's, which it calls when
no job trains: an idle child ends as before.

While a job trains, SIGTERM sets :data:`services.jobs.limits.SHUTDOWN` (the
trainer's ``interrupt`` sees it before the next mini-batch; the job is
released, no attempt counted, and ``execute_job`` returns "released", which
``run_job`` hands back to the queue). In the main process,
``worker_shutting_down`` forwards a warm shutdown's SIGTERM to the children
that run a task, since Docker signals the main process only. The job then
ends within a mini-batch plus its last write (``SHUTDOWN_WRITE_SECONDS``),
inside compose's ``stop_grace_period`` and ``make down``'s wait.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

from celery import signals
from celery.worker import state as worker_state

from services.jobs.limits import SHUTDOWN, TRAINING

_previous: Any = signal.SIG_DFL  # billiard's handler, for a child with no job in training


def stop_training(signum: int, frame: FrameType | None) -> None:
    """A pool child's SIGTERM: stop the job in training at its next mini-batch, or do
    what the pool's own handler does when none trains."""
    if TRAINING.is_set():
        SHUTDOWN.set()  # repeated signals change nothing: the job is stopping
        return
    if callable(_previous):
        _previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@signals.task_prerun.connect
def _install_in_child(**_kwargs: Any) -> None:
    """In a pool child, before its task: put our SIGTERM handler in front of the pool's."""
    global _previous
    current = signal.getsignal(signal.SIGTERM)
    if current is stop_training or current == signal.SIG_IGN:
        return
    _previous = current
    signal.signal(signal.SIGTERM, stop_training)


@signals.worker_shutting_down.connect
def _forward_to_busy_children(how: str = "", **_kwargs: Any) -> None:
    """In the main process (from its signal handler): on a warm shutdown, SIGTERM each
    child that runs a task, so that its job stops instead of being waited for."""
    if how != "Warm":
        return
    pids = {request.worker_pid for request in list(worker_state.active_requests)}
    for pid in pids:
        if pid and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
