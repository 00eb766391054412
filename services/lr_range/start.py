"""Starting a range test: validate its spec, store it, commit, then send its message."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from services import budgets, idempotency
from services.auth import LOCAL, Principal
from services.celery_app import Dispatcher
from services.config import Limits
from services.db.models import LrRangeTest
from services.lr_range.rows import RangeTestSettings, create_range_test, fail_unstarted
from services.specs import JobCreate, SpecValidationError
from services.submit import QueueUnavailable, prepare_job
from services.trainer.data import dataset_shape, validation_rows


def prepare_range_test(
    session: Session, spec: JobCreate, *, principal: Principal = LOCAL, limits: Limits
) -> dict:
    """The normalized job spec of a test, as ``POST /jobs`` would store it (an
    uploaded dataset's facts filled in, inline arrays stored); errors name ``spec.*``."""
    try:
        normalized = prepare_job(session, spec, principal=principal, limits=limits)
    except SpecValidationError as err:
        details = [{**d, "loc": f"spec.{d['loc']}".rstrip(".")} for d in err.details]
        raise SpecValidationError("invalid range test spec", details) from err
    return normalized


def check_range_test_budget(spec: dict[str, Any], steps: int, limits: Limits) -> None:
    """A 422 at ``steps`` if ``steps`` batches of the normalized ``spec`` are over the
    job budgets: costed as a job of enough epochs to train that many batches (an upper
    bound: a test evaluates nothing), since a full-batch spec of 20 epochs passes its own
    budget with 20 batches where a test may train 2,000."""
    ds, hp = spec["dataset"], spec["hyperparameters"]
    n, _ = dataset_shape(ds["name"], ds)
    n_val = validation_rows(ds["name"], ds, ds.get("validation_split", 0.2))
    n_tr = max(n - (round(n * ds.get("validation_split", 0.2)) if n_val is None else n_val), 1)
    batches = math.ceil(n_tr / min(int(hp.get("batch_size") or n_tr), n_tr))
    as_job = {**spec, "hyperparameters": {**hp, "epochs": math.ceil(steps / batches)}}
    details = budgets.problems(
        budgets.estimate(as_job), limits.max_job_memory_bytes, limits.max_job_flops
    )
    if details:
        msgs = [{"loc": "steps", "msg": d["msg"].replace("the job", "the test")} for d in details]
        raise SpecValidationError("the range test is over its budget", msgs)


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
    claim: idempotency.Claim | None = None,
) -> LrRangeTest:
    """Store a test of the normalized job ``spec``, commit, queue it; return its row as
    committed (``queued``: a worker may have claimed it since; its ``id`` is the test's).
    ``claim``: its Idempotency-Key, stored with it (:class:`idempotency.KeyTaken` if a
    racing request stored it first: nothing is queued).

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
    if claim is not None:
        idempotency.remember(session, claim, resource_id=test.id, status_code=202)
    session.commit()
    try:
        enqueue_range_test(dispatcher, test.id)
    except Exception as err:
        fail_unstarted(session, test.id, f"the queue was unavailable ({type(err).__name__})")
        if claim is not None:  # a retry with the key (the 503 says so) starts it again
            idempotency.forget(session, claim)
        session.commit()
        raise QueueUnavailable(err) from err
    return test
