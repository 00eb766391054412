"""Each worker process's address-space limit (``SWEEPLAB_WORKER_MEMORY_BYTES``).

Set in every pool process as it starts (``worker_process_init``), so that a job that
outgrows its budget estimate meets a ``MemoryError`` (the job fails with "the training
ran out of memory") instead of the kernel's OOM killer taking the worker, and with it
an attempt of the job and the other jobs of the machine. The limit is on virtual
memory (RLIMIT_AS): it counts reserved but untouched pages too (glibc's per-thread
malloc arenas, thread stacks, OpenBLAS's buffers), which is why the default is the
job budget plus a margin, not the job budget. The main process is not limited.
"""

from __future__ import annotations

import logging
import resource

from celery import signals

from services.config import Settings

log = logging.getLogger(__name__)


def limit_address_space(limit_bytes: int) -> None:
    """Lower this process's soft RLIMIT_AS to ``limit_bytes`` (0: leave it as it is).

    Never above the hard limit, which an unprivileged process cannot raise.
    """
    if limit_bytes <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@signals.worker_process_init.connect
def _limit_memory(**_kwargs: object) -> None:
    """Cap this pool process's address space at SWEEPLAB_WORKER_MEMORY_BYTES."""
    limit = Settings.from_env().worker_memory_bytes
    try:
        limit_address_space(limit)
    except (ValueError, OSError) as err:  # a limit below what the process already maps
        log.warning("could not limit the address space to %d bytes: %s", limit, err)
