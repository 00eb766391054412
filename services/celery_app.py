"""The Celery app factory and the dispatcher that the API and workers send work through.

Tasks are sent by name (``sweeplab.run_job``), so nothing here imports ``worker``.
Messages carry ids only; the database holds everything else.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery

from services.config import Settings

RUN_JOB = "sweeplab.run_job"
RUN_PACK = "sweeplab.run_pack"  # a sweep's trials trained together (services.jobs.pack_run)
RECOVER = "sweeplab.recover"
RUN_RANGE_TEST = "sweeplab.run_lr_range_test"  # services.lr_range
CANCEL_KEY = "sweeplab:cancel:{job_id}"
CANCEL_KEY_TTL = 7 * 24 * 3600
# kombu's Redis transport: a queue is a list of JSON messages named after it (priority
# 0; other priorities get suffixed lists); delivered but unacknowledged messages sit in
# a hash, with their delivery times in a sorted set.
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"
# At most this many queued messages are read per recover pass (~1 KB each).
QUEUE_SCAN_CAP = 10_000


def control_queue(settings: Settings) -> str:
    """The queue of recover passes: every worker consumes it beside the trials' queue,
    and no backlog of trials stands in front of it."""
    return f"{settings.celery_queue}.control"


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
        task_routes={RECOVER: {"queue": control_queue(settings)}},
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # Task events (sent, received, started, succeeded, failed, ...) for Flower and
        # any event receiver: one Redis PUBLISH each, a handful per task. Measured
        # (benchmarks/monitoring_overhead.py): sending a task takes ~0.3 ms more for
        # its task-sent event; a sweep of tiny trials ends no later with them on.
        worker_send_task_events=True,
        task_send_sent_event=True,
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

    def enqueue_pack(self, job_ids: list[str]) -> None:
        """Send one ``run_pack`` for the trials ``job_ids``, trained together in one
        process (call after the rows are committed)."""
        self.celery.send_task(RUN_PACK, args=[list(job_ids)], queue=self.settings.celery_queue)

    def enqueue_units(self, units: Iterable[list[str]]) -> None:
        """Send each unit: one id as ``run_job``, several as one ``run_pack``."""
        for unit in units:
            if len(unit) > 1:
                self.enqueue_pack(unit)
            else:
                self.enqueue_jobs(unit)

    def enqueue_range_tests(self, test_ids: Iterable[str]) -> None:
        """Send ``run_lr_range_test`` for each id (call after the rows are committed)."""
        for test_id in test_ids:
            self.celery.send_task(RUN_RANGE_TEST, args=[test_id], queue=self.settings.celery_queue)

    def waiting_job_ids(self, *, fresh_seconds: float, task: str = RUN_JOB) -> set[str] | None:
        """Ids of jobs whose ``run_job`` message is still waiting in the queue, or was
        delivered to a worker less than ``fresh_seconds`` ago and not acknowledged yet.

        One LRANGE of the queue (at most :data:`QUEUE_SCAN_CAP` messages) and a read of
        the fresh entries of kombu's unacked hash; None when the queue holds more than
        the cap, so that nothing can be said of the messages beyond it. An unacknowledged message
        older than ``fresh_seconds`` is not counted: a live worker claims a job within
        moments of receiving it (one message per process), so such a message belongs
        to a worker that died; kombu would restore it only after the visibility
        timeout (hours). ``task``: another task's messages (the id is their first argument).
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.settings.celery_queue)
        pipe.lrange(self.settings.celery_queue, 0, QUEUE_SCAN_CAP - 1)
        pipe.zrangebyscore(UNACKED_INDEX_KEY, time.time() - fresh_seconds, "+inf")
        length, queued, fresh = pipe.execute()
        if length > QUEUE_SCAN_CAP:
            return None
        ids = {job_id for raw in queued for job_id in message_job_ids(raw, task)}
        for entry in self.redis.hmget(UNACKED_KEY, fresh) if fresh else []:
            if entry is None:  # acknowledged since
                continue
            try:
                message = json.loads(entry)[0]  # [message, exchange, routing key]
            except (ValueError, TypeError, IndexError, KeyError):
                continue
            ids.update(message_job_ids(message, task))
        return ids

    def queue_depths(self) -> tuple[dict[str, int], int]:
        """Messages waiting in each of our queues (the trials' and the control queue),
        and messages delivered to a worker and not yet acknowledged (jobs being run,
        on every queue of this Redis database): one round trip, LLEN and HLEN.

        Only priority 0 is counted: nothing here sends with a priority, and kombu
        keeps other priorities in lists of their own."""
        queues = [self.settings.celery_queue, control_queue(self.settings)]
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
        pipe.hlen(UNACKED_KEY)
        *lengths, unacked = pipe.execute()
        return dict(zip(queues, map(int, lengths), strict=True)), int(unacked)

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


def message_job_ids(message: bytes | str | dict[str, Any], task: str = RUN_JOB) -> list[str]:
    """The job ids a ``task`` message names; for ``run_job``, a ``run_pack``'s too."""
    if (args := _task_args(message, task)) is not None:
        return [str(args[0])]
    if task == RUN_JOB and (args := _task_args(message, RUN_PACK)) is not None:
        return [str(job_id) for job_id in args[0]] if isinstance(args[0], list) else []
    return []


def run_job_id(message: bytes | str | dict[str, Any], task: str = RUN_JOB) -> str | None:
    """The job id of a ``run_job`` message (or the first argument of a ``task`` message)
    as kombu stores it in Redis; None for any other message (another task, a body that
    does not parse)."""
    args = _task_args(message, task)
    return None if args is None else str(args[0])


def _task_args(message: bytes | str | dict[str, Any], task: str) -> list[Any] | None:
    """The arguments of a ``task`` message as kombu stores it; None for another message."""
    try:
        if not isinstance(message, dict):
            message = json.loads(message)
        if not isinstance(message, dict) or (message.get("headers") or {}).get("task") != task:
            return None
        body: Any = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        body = json.loads(body)
        args = body["args"] if isinstance(body, dict) else body[0]  # protocol 1 or 2
        args[0]  # noqa: B018 (a message without arguments is no job's)
        return list(args)
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
    ):  # binascii.Error is a ValueError
        return None
