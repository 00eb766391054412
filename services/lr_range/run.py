"""What a worker runs for one range test message: claim the test (compare-and-set),
run the trainer's ``lr_range_test``, record the outcome, hand it to the mirror."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.datasets import fit_data
from services.db.models import LrRangeTest, utcnow
from services.jobs.lease import LeaseHeldError, worker_name
from services.jobs.records import training_error
from services.lr_range.rows import (
    FINISHED,
    claim_range_test,
    fail_unstarted,
    finish_range_test,
)
from services.mirror.range_tests import range_test_finished
from services.specs import trainer_spec
from services.trainer import lr_range_test

log = logging.getLogger(__name__)


def execute_range_test(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    test_id: str,
    worker: str | None = None,
) -> str:
    """Claim ``test_id``, run it and record the outcome; return its final status.

    Returns "missing" for an unknown id, "finished" when it is done already (a
    redelivered message), and "lost" when another attempt took it over meanwhile.
    A test whose run raises ends ``failed`` with the error. Raises
    :class:`services.jobs.lease.LeaseHeldError` while another worker runs it.
    """
    worker = worker or worker_name()
    with session_factory() as session:
        test = _claim(settings, session, test_id, worker)
        if isinstance(test, str):
            return test
        session.commit()
        attempt, spec = test.attempts, trainer_spec(test.spec)
        options: dict[str, Any] = dict(
            lr_min=test.min_lr,
            lr_max=test.max_lr,
            steps=test.steps,
            smoothing=test.smoothing,
            diverge_factor=test.diverge_factor,
        )
    started = time.monotonic()
    result: dict[str, Any] | None = None
    try:
        data = fit_data(spec, session_factory, settings)
        result = lr_range_test(spec, data=data, **options)
        status, error = "succeeded", None
    except Exception as err:  # the test's outcome, recorded: never lost with the message
        log.warning("range test %s failed", test_id, exc_info=True)
        status, error = "failed", training_error(err)
    seconds = time.monotonic() - started
    with session_factory() as session:
        own = finish_range_test(
            session,
            test_id=test_id,
            attempt=attempt,
            status=status,
            result=result,
            error=error,
            seconds=seconds,
        )
        session.commit()
    if not own:
        return "lost"
    range_test_finished(settings, test_id)
    return status


def _claim(settings: Settings, session: Session, test_id: str, worker: str) -> LrRangeTest | str:
    """The claimed test, or what became of it ("missing", "finished", "failed": its
    workers were lost too often). A test whose holder died on this host (killed, out
    of memory) is taken over at once; one running elsewhere raises LeaseHeldError."""

    def take(dead_holder: tuple[str, int] | None = None) -> LrRangeTest | None:
        return claim_range_test(
            session,
            test_id=test_id,
            worker=worker,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            dead_holder=dead_holder,
        )

    test = take()
    if test is not None:
        return test
    current = session.get(LrRangeTest, test_id)
    if current is None:
        return "missing"
    if current.status in FINISHED:
        return "finished"
    now = utcnow()
    expires = current.lease_expires_at
    held = LeaseHeldError(
        max((expires - now).total_seconds(), 1.0) if expires is not None else 1.0,
        holder=current.worker,
    )
    dead = held.holder_died_here or (expires is not None and expires < now)
    if dead and current.attempts >= settings.max_attempts:
        fail_unstarted(
            session,
            test_id,
            f"the workers running it were lost {current.attempts} times (a crash or "
            "out of memory); the workers' logs have the details",
        )
        session.commit()
        range_test_finished(settings, test_id)
        return "failed"
    if held.holder_died_here and current.worker is not None:
        session.rollback()
        test = take(dead_holder=(current.worker, current.attempts))
        if test is not None:
            return test
    raise held
