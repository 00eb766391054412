"""Submitting and cancelling: commit the rows, then talk to the queue, and compensate when it fails.

These are the units of work behind the API's ``POST`` routes. Unlike the row
operations in ``services.jobs.rows`` and ``services.sweeps.scheduler`` (which only flush),
each function here commits: a message must leave only after its rows are
committed, and a row whose message could not leave must not stay queued.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services import idempotency, reuse
from services.auth import LOCAL, Principal, check_quota
from services.celery_app import Dispatcher
from services.config import Limits, Settings
from services.datasets import attach_dataset, refers_to
from services.db.models import Job, Sweep
from services.jobs.rows import create_job, fail_unqueued, request_cancel
from services.lr_range.rows import fail_unstarted
from services.mirror import catch_up as mirror
from services.specs import (
    JobCreate,
    SpecValidationError,
    SweepCreate,
    has_validation,
    normalize_job,
    validate_job,
)
from services.specs.job import trainer_normalize, trainer_spec
from services.sweeps import scheduler
from services.sweeps.lifecycle import check_warm_start, extend_sweep, resume_sweep
from services.sweeps.packing import trial_units
from services.sweeps.reused import reused_trials
from services.sweeps.scheduler import advance_and_enqueue, create_sweep

log = logging.getLogger(__name__)


class QueueUnavailable(RuntimeError):
    """The broker did not take a submission's messages; its rows were failed or cancelled."""

    def __init__(self, cause: Exception):
        super().__init__(f"the job queue is unavailable ({type(cause).__name__}); try again")
        self.cause = cause


#: what a sweep may not change in its base's dataset: which data the trials train on
_DATASET_FIELDS = ("dataset", "dataset.name", "dataset.id", "dataset.X", "dataset.y")


def prepare_job(
    session: Session, body: JobCreate, *, principal: Principal = LOCAL, limits: Limits
) -> dict[str, Any]:
    """The normalized spec of a job request: an ``uploaded`` dataset gets the stored
    dataset's facts (a 422 at ``dataset.id`` if it is not the principal's), inline
    ``arrays`` become a stored dataset (flushed: committed with the job) and the spec
    refers to it."""
    if body.dataset.name not in ("arrays", "uploaded"):
        return check_split(body, normalize_job(body, limits))
    if body.dataset.name == "arrays":
        normalize_job(body, limits)  # the trainer's checks of the rows, with their messages
    spec, _ = attach_dataset(
        session,
        body.model_dump(exclude_unset=True),
        principal,
        max_bytes=limits.max_dataset_bytes,
    )
    return check_split(body, validate_job(spec, limits))


def check_split(body: JobCreate, spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``spec``, unless the request asked for a ``validation_split`` that gives no
    validation row (then a 422 there): the split is stratified by class, and a class
    of one or two rows keeps them for training. Left at its default, the job trains
    without validation as the trainer does (its objective falls back to the training
    loss)."""
    split = body.dataset.validation_split
    if "validation_split" in body.dataset.model_fields_set and split > 0:
        if not has_validation(spec):
            raise SpecValidationError(
                "invalid job spec",
                [
                    {
                        "loc": f"{prefix}dataset.validation_split",
                        "msg": f"{split} gives no validation row: the split is stratified by "
                        "class, and a class of one or two rows keeps them for training; "
                        "use 0 to train without validation",
                    }
                ],
            )
    return spec


def prepare_sweep(
    session: Session, sweep: SweepCreate, *, principal: Principal = LOCAL, limits: Limits
) -> SweepCreate:
    """``sweep`` whose base refers to a stored dataset (see :func:`prepare_job`): its
    trials' specs hold the reference, never rows. A sweep cannot vary the dataset
    itself (its id, name or rows), only how each trial splits it."""
    check_warm_start(session, sweep, principal.user_id, principal.is_admin)
    base = sweep.base.model_dump(exclude_unset=True)
    if sweep.base.dataset.name not in ("arrays", "uploaded"):
        return sweep
    for path in sweep.parameters:
        if path in _DATASET_FIELDS or any(path.startswith(f"{f}.") for f in _DATASET_FIELDS[2:]):
            raise SpecValidationError(
                "invalid sweep spec",
                [
                    {
                        "loc": f"parameters.{path}",
                        "msg": "a sweep over stored or inline data cannot change the data; "
                        "submit one sweep per dataset",
                    }
                ],
            )
    if sweep.base.dataset.name == "arrays":
        trainer_normalize(trainer_spec(base), prefix="base")
    base, _ = attach_dataset(
        session, base, principal, prefix="base.", max_bytes=limits.max_dataset_bytes
    )
    check_split(sweep.base, base, "base.")
    data = sweep.model_dump(exclude_unset=True)
    data["base"] = base
    try:
        return SweepCreate.model_validate(data, context={"limits": limits})
    except Exception as err:  # the reference is valid where the rows were: a bug
        raise RuntimeError(f"the sweep with its dataset attached is invalid: {err}") from err


def submit_job(
    session: Session,
    dispatcher: Dispatcher,
    *,
    spec: dict,
    principal: Principal = LOCAL,
    settings: Settings | None = None,
    claim: idempotency.Claim | None = None,
) -> Job:
    """Store a job (normalized ``spec``) owned by ``principal`` and queue it; or, if an
    identical job of theirs already succeeded (``services.reuse``) and the spec does not
    say ``"reuse": false``, store it as a finished copy of that job (nothing queued).
    ``claim``: its Idempotency-Key, stored with it (:class:`idempotency.KeyTaken` if
    a racing request stored it first: nothing was stored).

    Raises :class:`services.auth.QuotaExceeded` when the owner already has their
    budget of active jobs, and :class:`QueueUnavailable` after failing the job if
    the broker is down, so that no job is left queued that nobody will run.
    """
    fp = reuse.fingerprint(spec)
    source = None
    if reuse.wants_reuse(spec):
        source = reuse.find_source(session, fingerprint=fp, owner_id=principal.user_id)
    if settings is not None and source is None:
        check_quota(session, principal, 1, settings.limits.max_active_jobs)
    status = "queued" if source is None else "succeeded"
    job = create_job(session, spec=spec, owner_id=principal.user_id, status=status)
    job.fingerprint = fp
    if source is not None:
        reuse.copy_results(session, job, source)
    if claim is not None:
        idempotency.remember(session, claim, resource_id=job.id)
    session.commit()
    if source is not None:
        if settings is not None:
            mirror_finished(settings, [job.id])
        return job
    try:
        dispatcher.enqueue_jobs([job.id])
    except Exception as err:
        fail_unqueued(session, [job.id], err)
        _forget(session, claim)  # a retry with the key (the 503 says so) submits again
        session.commit()
        raise QueueUnavailable(err) from err
    return job


def _forget(session: Session, claim: idempotency.Claim | None) -> None:
    """Drop the key of a request whose resource could not be queued (answered 503)."""
    if claim is not None:
        idempotency.forget(session, claim)


def submit_sweep(
    session: Session,
    dispatcher: Dispatcher,
    *,
    sweep: SweepCreate,
    settings: Settings,
    principal: Principal = LOCAL,
    claim: idempotency.Claim | None = None,
) -> Sweep:
    """Store a sweep owned by ``principal`` and its first trials, and queue them.

    Its first trials (up to ``max_concurrency``) count against the owner's budget
    of active jobs (:class:`services.auth.QuotaExceeded`). Raises
    :class:`QueueUnavailable` after cancelling the sweep and failing its trials
    if the broker is down, rather than strand them.
    """
    first = min(sweep.max_concurrency, sweep.total_trials())
    check_quota(session, principal, first, settings.limits.max_active_jobs)
    row, job_ids = create_sweep(
        session, sweep=sweep, limits=settings.limits, owner_id=principal.user_id
    )
    row.dataset_id = refers_to(row.spec["base"])
    if claim is not None:
        idempotency.remember(session, claim, resource_id=row.id)
    reused = reused_trials(session)
    units = trial_units(session, job_ids, settings.pack_processes)  # packs: sweeps.packing
    session.commit()
    mirror_finished(settings, reused)
    try:
        if row.range_test_id is not None:  # its trials wait for the test's bounds
            dispatcher.enqueue_range_tests([row.range_test_id])
        dispatcher.enqueue_units(units)
    except Exception as err:
        scheduler.cancel_sweep(session, row.id)
        fail_unqueued(session, job_ids, err)
        if row.range_test_id is not None:
            fail_unstarted(session, row.range_test_id, f"the queue was unavailable ({err!r})")
        _forget(session, claim)
        session.commit()
        raise QueueUnavailable(err) from err
    return row


def restart_sweep(
    session: Session,
    dispatcher: Dispatcher,
    *,
    sweep_id: str,
    settings: Settings,
    principal: Principal = LOCAL,
    n_trials: int | None = None,
    claim: idempotency.Claim | None = None,
) -> Sweep:
    """Resume a stopped sweep (``n_trials`` None) or extend it by ``n_trials``, then queue
    its new trials (``services.sweeps.lifecycle``). They count against the owner's
    budget of active jobs (:class:`services.auth.QuotaExceeded`); if the broker is down
    its new trials are failed, a sweep that was not running is put back as it was, and
    :class:`QueueUnavailable` is raised (the request's key forgotten: a retry runs again).
    Raises ``LookupError`` and ``lifecycle.SweepStateError`` as those do."""
    limits = settings.limits
    before = session.get(Sweep, sweep_id)
    was = (before.status, before.finished_at) if before is not None else None
    if n_trials is None:
        row, job_ids = resume_sweep(session, sweep_id, limits=limits)
    else:
        row, job_ids = extend_sweep(session, sweep_id, n_trials, limits=limits)
    check_quota(session, principal, 0, limits.max_active_jobs)  # the new ones are counted
    if claim is not None:  # its Idempotency-Key (KeyTaken if a racing request stored it)
        idempotency.remember(session, claim, resource_id=row.id, status_code=202)
    reused = reused_trials(session)
    units = trial_units(session, job_ids, settings.pack_processes)
    session.commit()
    mirror_finished(settings, reused)
    try:
        dispatcher.enqueue_units(units)
    except Exception as err:
        # only the new trials fail: trials the sweep was already training go on, and a
        # sweep that was stopped or done is left as it was
        fail_unqueued(session, job_ids, err)
        if was is not None and was[0] != "running":
            row.status, row.finished_at = was
        _forget(session, claim)
        session.commit()
        raise QueueUnavailable(err) from err
    return row


def mirror_finished(settings: Settings, job_ids: list[str]) -> None:
    """Hand jobs that were reused (finished at once) to the MLflow mirror; if that
    fails, its periodic catch-up finds them (the database says what MLflow lacks)."""
    for job_id in job_ids:
        try:
            mirror.job_finished(settings, job_id)
        except Exception:
            log.warning("job %s: not handed to the mirror; the catch-up will", job_id)


def cancel_job(
    session: Session,
    *,
    job_id: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
) -> Job:
    """Cancel a queued job, or ask a running one to stop at its next epoch.

    A queued trial that ends this way frees a place in its sweep, which may
    start its next trial. Raises ``LookupError`` for an unknown id and
    ``services.jobs.rows.JobFinishedError`` for a finished job.
    """
    job = request_cancel(session, job_id)
    session.commit()
    if job.status == "running":
        signal_cancel(dispatcher, [job.id])
    elif job.sweep_id:
        try:
            advance_and_enqueue(
                settings=settings,
                session_factory=session_factory,
                dispatcher=dispatcher,
                sweep_id=job.sweep_id,
            )
        except Exception:  # the cancel is committed; the recover pass sends what waits
            log.warning("sweep %s: not advanced after a cancel", job.sweep_id, exc_info=True)
    return job


def cancel_sweep(session: Session, *, sweep_id: str, dispatcher: Dispatcher) -> Sweep:
    """Cancel a sweep: queued trials never start, running ones stop within an epoch.

    Raises ``LookupError`` for an unknown id and
    ``services.sweeps.scheduler.SweepFinishedError`` for a finished sweep.
    """
    sweep, running = scheduler.cancel_sweep(session, sweep_id)
    session.commit()
    signal_cancel(dispatcher, running)
    return sweep


def signal_cancel(dispatcher: Dispatcher, job_ids: list[str]) -> None:
    """Tell running workers at once; if Redis is down, the database flag still
    reaches them at their next flush."""
    try:
        dispatcher.request_cancel(job_ids)
    except Exception:
        dispatcher.close()
