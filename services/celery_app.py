"""The Celery app factory and the dispatcher that the API and workers send work through.

Tasks are sent by name (``sweeplab.run_job``), so nothing here imports ``worker``.
Messages carry ids only; the database holds everything else.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis
from celery import Celery

from services.config import Settings

RUN_JOB = "sweeplab.run_job"
CANCEL_KEY = "sweeplab:cancel:{job_id}"
CANCEL_KEY_TTL = 7 * 24 * 3600


def make_celery(settings: Settings) -> Celery:
    """Build a Celery app on ``settings.redis_url``; JSON only, late acks, one at a time."""
    app = Celery("sweeplab", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.celery_queue,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


class Dispatcher:
    """Enqueue jobs and signal cancellation, for the API and the workers alike."""

    def __init__(self, settings: Settings, celery: Celery | None = None):
        self.settings = settings
        self._celery = celery
        self._redis: redis.Redis | None = None

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = make_celery(self.settings)
        return self._celery

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(
                self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5
            )
        return self._redis

    def enqueue_jobs(self, job_ids: Iterable[str]) -> None:
        """Send ``run_job`` for each id (call after the rows are committed)."""
        for job_id in job_ids:
            self.celery.send_task(RUN_JOB, args=[job_id], queue=self.settings.celery_queue)

    def request_cancel(self, job_ids: Iterable[str]) -> None:
        """Set the per-job cancel flag that running workers poll every epoch."""
        keys = [CANCEL_KEY.format(job_id=job_id) for job_id in job_ids]
        if keys:
            pipe = self.redis.pipeline()
            for key in keys:
                pipe.set(key, 1, ex=CANCEL_KEY_TTL)
            pipe.execute()

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(CANCEL_KEY.format(job_id=job_id)))

    def ping(self) -> bool:
        return bool(self.redis.ping())

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None
