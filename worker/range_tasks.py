"""Celery tasks of learning-rate range tests: run one, mirror one (thin: ids in)."""

from __future__ import annotations

import logging
import random

from celery import shared_task

from services.celery_app import RUN_RANGE_TEST
from services.config import Settings
from services.jobs.lease import LeaseHeldError
from services.lr_range.rows import FINISHED
from services.lr_range.run import execute_range_test
from services.mirror.plumbing import LOW_PRIORITY, MirrorBusy
from services.mirror.range_tests import MIRROR_RANGE_TEST_TASK, mirror_range_test
from services.sweeps.waiting import advance_waiting
from worker.tasks import runtime

log = logging.getLogger(__name__)

RETRY_CAP_S = 300  # back off up to 5 minutes between attempts while MLflow is down


@shared_task(name=RUN_RANGE_TEST, bind=True, acks_late=True, max_retries=None)
def run_lr_range_test(self, test_id: str) -> str:
    """Run one range test; a finished test is a no-op, a copy of one running elsewhere is
    dropped (or retried once its lease runs out, if its holder died on this host)."""
    rt = runtime()
    try:
        status = execute_range_test(
            settings=rt.settings, session_factory=rt.sessions, test_id=test_id
        )
    except LeaseHeldError as err:
        if err.holder_died_here:
            raise self.retry(countdown=err.retry_in) from None
        log.info("run_lr_range_test %s: duplicate dropped; it runs elsewhere", test_id)
        return "duplicate"
    if status in FINISHED:  # a sweep whose bounds come from it creates its trials now
        advance_waiting(
            settings=rt.settings,
            session_factory=rt.sessions,
            dispatcher=rt.dispatcher,
            test_id=test_id,
        )
    return status


@shared_task(name=MIRROR_RANGE_TEST_TASK, bind=True, max_retries=200, acks_late=True)
def mirror_lr_range_test(self, test_id: str) -> str:
    """Mirror one finished range test to MLflow, retrying until it lands."""
    try:
        mirror_range_test(Settings.from_env(), test_id)
    except MirrorBusy as exc:
        raise self.retry(exc=exc, countdown=1.0 + random.random(), priority=LOW_PRIORITY) from None
    except Exception as exc:
        retries = self.request.retries
        log.warning("mirror of range test %s failed (%s); retry %d", test_id, exc, retries)
        countdown = min(RETRY_CAP_S, 2.0 ** min(retries, 10)) * (0.75 + 0.5 * random.random())
        raise self.retry(exc=exc, countdown=countdown, priority=LOW_PRIORITY) from None
    return "mirrored"
