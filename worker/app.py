"""The Celery worker's entry point: ``celery -A worker.app worker``.

Settings come from the environment here. BLAS is limited to
``SWEEPLAB_BLAS_THREADS`` (default 1) threads per process before numpy is
first imported: a worker runs ``--concurrency`` = cores processes, and
2 processes x 2 BLAS threads on 2 cores is slower than 2 x 1.
"""

from __future__ import annotations

import os

_BLAS_THREADS = os.environ.get("SWEEPLAB_BLAS_THREADS") or "1"
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, _BLAS_THREADS)

from services.celery_app import make_celery  # noqa: E402 (after the BLAS limits)
from services.config import Settings  # noqa: E402

settings = Settings.from_env()
app = make_celery(settings)
app.conf.include = [
    "worker.tasks",
    "worker.range_tasks",
    "worker.mirror_tasks",
    "worker.ticker",
    "worker.limits",
    "worker.shutdown",
]
