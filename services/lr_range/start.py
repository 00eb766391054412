"""Starting a range test: validate its spec, store it, commit, then send its message."""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.auth import LOCAL, Principal
from services.celery_app import Dispatcher
from services.config import Limits
from services.db.models import LrRangeTest
from services.lr_range.rows import RangeTestSettings, create_range_test, fail_unstarted
from services.specs import JobCreate, SpecValidationError
from services.submit import QueueUnavailable, prepare_job


def prepare_range_test(
    session: Session, spec: JobCreate, *, principal: Principal = LOCAL, limits: Limits
) -> dict:
    """The normalized job spec of a test, as ``POST /jobs`` would store it (an
    uploaded dataset's facts filled in, inline arrays stored); errors name ``spec.*``."""
    try:
        return prepare_job(session, spec, principal=principal, limits=limits)
    except SpecValidationError as err:
        details = [{**d, "loc": f"spec.{d['loc']}".rstrip(".")} for d in err.details]
        raise SpecValidationError("invalid range test spec", details) from err


def enqueue_range_test(dispatcher: Dispatcher, test_id: str) -> None:
    """Send the test's message (after its row is committed)."""
    dispatcher.enqueue_range_tests([test_id])


def start_range_test(
    session: Session,
    dispatcher: Dispatcher,
    *,
    spec: dict,
    owner_id: str | None,
    settings: RangeTestSettings | None = None,
    name: str | None = None,
    experiment: str | None = None,
) -> LrRangeTest:
    """Store a test of the normalized job ``spec``, commit, queue it; return its row as
    committed (``queued``: a worker may have claimed it since; its ``id`` is the test's).

    Raises :class:`services.submit.QueueUnavailable` after failing the test if the
    broker is down, so that no test is left queued that nobody will run.
    """
    test = create_range_test(
        session,
        spec=spec,
        owner_id=owner_id,
        settings=settings,
        name=name,
        experiment=experiment,
    )
    session.commit()
    try:
        enqueue_range_test(dispatcher, test.id)
    except Exception as err:
        fail_unstarted(session, test.id, f"the queue was unavailable ({type(err).__name__})")
        session.commit()
        raise QueueUnavailable(err) from err
    return test
