"""The run of a pack: trials of one sweep and one architecture that a worker process
trains together (``services.trainer.fit_packed``), each still a job of its own.

Each trial is a :class:`services.jobs.run.JobRun`, wired to ``fit_packed`` through the
hooks ``fit`` takes, one per trial: its claim (compare-and-set; a trial that cannot
be claimed is left out of the pack), its lease (its own keeper renews it), its epochs
flushed as they finish, its cancel flag read at each epoch (a cancelled trial leaves
the pack at that epoch), pruning against its peers and its time limit as solo, its
checkpoints in the solo format, its final status, best epoch and diagnosis, and its
MLflow child run. ``fit_packed`` gives each trial the numbers of its solo ``fit``.

What the trials share: the check before each mini-batch (a warm shutdown, or a
database away for longer than the leases, stops the pack: every trial is released,
no attempt counted, and resumes from its checkpoint), and the end: the outcomes are
recorded as each trial leaves the pack (``fit_packed``'s ``on_leave``): a trial
that leaves early (pruned, cancelled, early-stopped, diverged) has its final status,
weights and MLflow run at that epoch while the others train on; an error out of the
trainer, or out of one trial's recording, fails every trial not yet recorded. The
sweep advances once for the whole pack, when it ends.

Resume: a worker killed mid-pack leaves each trial with its own latest checkpoint;
those may be of different epochs (one trial's flush made it, the next one's not yet).
``fit_packed`` resumes a pack from checkpoints of one epoch only, so the trials are
trained in groups of one checkpoint epoch, one group after the other (a group of one
trains alone, with ``fit``): the same numbers either way."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services import trainer
from services.celery_app import Dispatcher
from services.config import Settings
from services.datasets import fit_data
from services.db.models import TERMINAL_STATUSES, Job, utcnow
from services.jobs.lease import LeaseHeldError, take_job, worker_name
from services.jobs.limits import SHUTDOWN, TRAINING, RunLimits
from services.jobs.records import finish_job, load_checkpoint
from services.jobs.run import JobRun
from services.specs import trainer_spec
from services.sweeps.pruning import policy_for
from services.trainer.packed import PackError, check_packable

log = logging.getLogger(__name__)

# the status of a job that a warm shutdown stopped and handed back (as execute.RELEASED)
RELEASED = "released"
ORPHANED = "orphaned"
#: how often a pack's check before each mini-batch looks at its trials' leases
LEASE_CHECK_SECONDS = 0.05


@dataclass
class Member:
    """A claimed trial of the pack: its run, its checkpoint, the epoch it starts after."""

    run: JobRun
    resume_from: bytes | None
    start: int


def execute_pack(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    job_ids: list[str],
    worker: str | None = None,
    limits: RunLimits | None = None,
) -> tuple[dict[str, str], str | None]:
    """Claim the trials ``job_ids``, train the claimed ones together, record each outcome.

    Returns each trial's status (its final status, "released", "lost"; for a trial left
    out: "missing", "finished", "held" (another worker runs it), "orphaned" (a process of
    this host died holding it and its attempts are used up: see ``take_job``) or
    "exhausted") and the id of the sweep to advance (None if no trial ended here)."""
    if SHUTDOWN.requested:  # this worker is stopping: leave the pack to the next one
        return {job_id: RELEASED for job_id in job_ids}, None
    statuses: dict[str, str] = {}
    members: list[Member] = []
    cancelled: list[JobRun] = []
    sweep_ids: set[str] = set()
    with session_factory() as session:
        for job_id in job_ids:
            job = take_job(
                session,
                job_id=job_id,
                worker=worker or worker_name(),
                lease_seconds=settings.lease_seconds,
                max_attempts=settings.max_attempts,
            )
            if job is None:
                statuses[job_id] = _left_out(session, job_id)
                continue
            if job.sweep_id:
                sweep_ids.add(job.sweep_id)
            objective, prune = policy_for(session, job)
            run = JobRun(
                settings=settings,
                session_factory=session_factory,
                dispatcher=dispatcher,
                job=job,
                objective=objective,
                prune=prune,
                limits=limits,
            )
            checkpoint = load_checkpoint(session, job_id) if job.attempts > 1 else None
            resume_from = run.restore(session, checkpoint) if job.attempts > 1 else None
            if job.cancel_requested:
                cancelled.append(run)
            else:
                start = checkpoint.epoch if checkpoint is not None else 0
                members.append(Member(run, resume_from, start))
        session.commit()
    for run in cancelled:
        with session_factory() as session:
            finish_job(session, job_id=run.job_id, attempt=run.attempt, status="cancelled")
            session.commit()
        statuses[run.job_id] = "cancelled"
    if members:
        statuses.update(PackRun(settings, session_factory, members).run())
    return statuses, min(sweep_ids) if sweep_ids else None


def _left_out(session: Session, job_id: str) -> str:
    """Why a trial of the pack could not be claimed."""
    current = session.get(Job, job_id)
    if current is None:
        return "missing"
    if current.status in TERMINAL_STATUSES:
        return "finished"
    lease = current.lease_expires_at or utcnow()
    if lease < utcnow():
        return "exhausted"
    # a process of this host that died holding it, which take_job did not take over (its
    # attempts are used up): ORPHANED, for the caller to try again once the lease ran out
    return ORPHANED if LeaseHeldError(0, holder=current.worker).holder_died_here else "held"


class PackRun:
    """The claimed trials of a pack, trained in groups of one checkpoint epoch."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], members: list[Member]):
        self.settings = settings
        self.sessions = sessions
        self.members = members
        self.live: list[JobRun] = []
        # why the pack was stopped before a mini-batch: ("released", reason) or ("lost", "")
        self.stopped: tuple[str, str] | None = None
        self.checked_at = -math.inf

    def run(self) -> dict[str, str]:
        """Train every group; each trial's status ("released" or "lost" as solo)."""
        statuses: dict[str, str] = {}
        TRAINING.set()
        try:
            with contextlib.ExitStack() as leases:
                for member in self.members:
                    leases.enter_context(member.run.lease)
                ordered = sorted(self.members, key=lambda m: m.start)
                for _, group in groupby(ordered, key=lambda m: m.start):
                    statuses.update(self._train(list(group)))
        finally:
            TRAINING.clear()
        return statuses

    def interrupt(self) -> bool:
        """Before each mini-batch of the pack: progress for every trial's lease; stop the
        pack on a warm shutdown, a hung run, or leases that ran out while the database
        was away (a trial whose lease another worker took leaves at its epoch's end).
        The leases are looked at every ``LEASE_CHECK_SECONDS`` (they move in seconds; a
        pack's batches come every ~100 us)."""
        if SHUTDOWN.requested:
            self.stopped = ("released", "a warm shutdown")
            return True
        now = time.monotonic()
        if now - self.checked_at < LEASE_CHECK_SECONDS:
            return False
        self.checked_at = self._progress()
        if any(run.lease.hung.is_set() for run in self.live):
            self.stopped = ("lost", "")
        elif any(now > run.lease.valid_until for run in self.live):
            self.stopped = ("released", "the database was unreachable for longer than the lease")
        else:
            return False
        return True

    def _progress(self) -> float:
        """Training goes on: for every trial's lease keeper, those waiting for their
        group too (a keeper that sees none for ``hung_seconds`` ends the process)."""
        now = time.monotonic()
        for member in self.members:
            member.run.lease.progress_at = now
        return now

    def _train(self, group: list[Member]) -> dict[str, str]:
        specs = [trainer_spec(member.run.spec) for member in group]
        if len(group) > 1:
            try:
                check_packable(specs)
            except PackError:  # not expected (the scheduler packs by pack_key): alone then
                log.exception("trials %s cannot share a pack", [m.run.job_id for m in group])
                return {k: v for member in group for k, v in self._train([member]).items()}
        now = time.monotonic()
        for member in group:
            member.run.started = member.run.checkpoint_at = now
        if len(group) == 1:
            run = group[0].run
            alone = run.interrupt

            def interrupt() -> bool:
                self._progress()
                return alone()

            run.interrupt = interrupt  # type: ignore[method-assign]
            return {run.job_id: run.train_and_record(trainer.fit, group[0].resume_from, {})}
        self.live, self.stopped = [m.run for m in group], None
        statuses: dict[str, str] = {}

        def on_leave(i: int, result: Any) -> None:  # recorded as it leaves the pack
            run = group[i].run
            self.live.remove(run)
            run.lease.__exit__()  # its job is final: no more renewals (see run())
            statuses[run.job_id] = self._record(group[i], result)

        try:
            outcomes: list[Any] = trainer.fit_packed(
                specs,
                data=fit_data(group[0].run.spec, self.sessions, self.settings),
                on_epoch=[m.run.on_epoch for m in group],
                resume_from=[m.resume_from for m in group],
                history=[m.run.history if m.resume_from is not None else None for m in group],
                checkpoint_every=self.settings.checkpoint_every,
                on_checkpoint=[m.run.on_checkpoint for m in group],
                checkpoint_due=[m.run.checkpoint_due for m in group],
                interrupt=self.interrupt,
                on_leave=on_leave,
            )
        except Exception as err:  # the trials not yet recorded fail with it, as solo
            outcomes = [err] * len(group)
        for member, outcome in zip(group, outcomes, strict=True):
            if member.run.job_id not in statuses:
                statuses[member.run.job_id] = self._record(member, outcome)
        return statuses

    def _record(self, member: Member, outcome: Any) -> str:
        """Record a trial's outcome (its ``TrainResult``, or the pack's error) as solo."""
        run = member.run
        stopped = not isinstance(outcome, Exception) and outcome.status == "stopped"
        if stopped and run.stop_reason is None and self.stopped is not None:
            run.stop_reason, run.release_reason = self.stopped
        return run.train_and_record(_handing_over(outcome), member.resume_from, {})


def _handing_over(outcome: Any) -> Callable[..., Any]:
    """A stand-in for ``trainer.fit`` that returns (or raises) a pack's trial outcome."""

    def fit(*_args: Any, **_kwargs: Any) -> Any:
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return fit
