"""A packed sweep trained in process equals the same sweep with ``"packing": "off"``: the
same trials, statuses, best epochs, diagnoses and per-epoch metrics rows, bit for bit
(float32 and float64), with a diverging, an early-stopping, a pruned and a cancelled
trial in the packs; each trial keeps its own row, checkpoints and outcome."""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from services.db.models import Job, JobMetric, Sweep, utcnow
from services.jobs import pack_run
from services.jobs.execute import run_chain, run_pack_chain
from services.jobs.limits import SHUTDOWN
from services.specs import validate_sweep
from services.sweeps import pruning
from services.sweeps.packing import trial_units
from services.sweeps.scheduler import create_sweep
from tests.conftest import FakeDispatcher

# sine, 2 x 16 hidden, batch 16, momentum 0.9 (chosen with solo fit): 0.01 completes;
# 0.1 stops early at epoch 8 (val_loss, patience 2; too few peers to prune it); 0.003 is
# cancelled; 1e-5 is far worse than its three peers (pruned at epoch 2); 1.0 diverges in
# its first epoch; the last three are measured against seven peers (some are pruned)
RATES = [0.01, 0.1, 0.003, 1e-5, 1.0, 0.03, 0.001, 0.3]
CANCELLED = 2  # its cancel flag is seen at its third epoch
BASE = {
    "name": "packed",
    "reuse": False,  # each sweep trains (an identical earlier trial would be copied)
    "dataset": {"name": "sine", "n_samples": 300},
    "architecture": {"layers": [{"units": 16}, {"units": 16}]},
    "hyperparameters": {
        "learning_rate": 0.1,
        "epochs": 10,
        "batch_size": 16,
        "momentum": 0.9,
        "early_stopping": {"metric": "val_loss", "patience": 2},
    },
}


class QueueDispatcher(FakeDispatcher):
    """Records messages as units (one id: run_job; several: run_pack), in order, and
    answers a trial's cancel flag as set from its ``cancel_at``-th epoch on."""

    def __init__(self) -> None:
        super().__init__()
        self.units: list[list[str]] = []
        self.cancel_job: str | None = None
        self.asked: Counter[str] = Counter()

    def enqueue_jobs(self, job_ids: Any) -> None:
        super().enqueue_jobs(job_ids)
        self.units += [[job_id] for job_id in job_ids]

    def enqueue_pack(self, job_ids: Any) -> None:
        super().enqueue_pack(job_ids)
        self.units.append(list(job_ids))

    def cancel_requested(self, job_id: str) -> bool:
        self.asked[job_id] += 1
        return job_id == self.cancel_job and self.asked[job_id] >= 3


def run_sweep(
    settings, sessions, packing: Any, dtype: str, dispatcher: QueueDispatcher | None = None
) -> tuple[list[Any], list[Any], Any]:
    base = copy.deepcopy(BASE)
    base["hyperparameters"]["dtype"] = dtype
    body = {
        "name": f"sweep-{packing}",
        "base": base,
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": RATES}},
        "max_concurrency": 4,
        "early_stopping": {"policy": "median", "min_epochs": 2, "min_peers": 3},
        "packing": packing,
    }
    dispatcher = dispatcher or QueueDispatcher()
    with sessions() as session:
        sweep, ids = create_sweep(session, sweep=validate_sweep(body))
        units = trial_units(session, ids, settings.pack_processes)
        session.commit()
        sweep_id = sweep.id
    dispatcher.enqueue_units(units)
    with sessions() as session:
        dispatcher.cancel_job = session.scalar(
            select(Job.id).where(Job.sweep_id == sweep_id, Job.trial_index == CANCELLED)
        )
    settings = settings.model_copy(update={"chain_seconds": 0.0})
    done = 0
    while done < len(dispatcher.units):  # the queue, first in first out
        unit = dispatcher.units[done]
        done += 1
        kwargs = dict(settings=settings, session_factory=sessions, dispatcher=dispatcher)
        if len(unit) == 1:
            run_chain(**kwargs, job_id=unit[0])
        else:
            run_pack_chain(**kwargs, job_ids=unit)
    return (*outcome(sessions, sweep_id), dispatcher.units)


def timeless(value: Any) -> Any:
    """``value`` without its wall times (any key that names seconds), at any depth."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def outcome(sessions, sweep_id: str) -> tuple[list[Any], list[Any]]:
    """The trials (what a leaderboard shows) and their epochs, without wall times."""
    with sessions() as session:
        sweep = session.get(Sweep, sweep_id)
        assert sweep.status == "done"
        jobs = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id)))
        trials = sorted(
            (
                job.trial_index,
                job.status,
                job.params,
                job.best_epoch,
                job.objective,
                job.epochs_done,
                job.prune_reason,
                job.diagnosis,
                timeless(job.result),
                job.attempts,
            )
            for job in jobs
        )
        index = {job.id: job.trial_index for job in jobs}
        rows = sorted(
            (
                index[m.job_id],
                m.epoch,
                m.train_loss,
                m.val_loss,
                timeless(m.metrics),
            )
            for m in session.scalars(select(JobMetric).where(JobMetric.job_id.in_(index)))
        )
    return trials, rows


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_packed_sweep_equals_the_unpacked_one(settings, sessions, monkeypatch, dtype):
    monkeypatch.setattr(pruning, "MEDIAN_CHECK_SECONDS", 0.0)  # every epoch: no clock in it
    off_trials, off_rows, off_units = run_sweep(settings, sessions, "off", dtype)
    trials, rows, units = run_sweep(settings, sessions, 4, dtype)
    assert [len(u) for u in off_units] == [1] * len(RATES)
    assert [len(u) for u in units] == [4, 4]  # the second pack once the first ended
    assert trials[0][1] == "succeeded" and trials[0][8]["status"] == "completed"
    assert trials[1][1] == "succeeded" and trials[1][8]["status"] == "early_stopped"
    assert trials[1][5] < 10
    assert trials[CANCELLED][1] == "cancelled" and trials[CANCELLED][5] == 3
    assert trials[3][1] == "pruned" and trials[3][5] == 2
    assert trials[4][1] == "diverged"
    assert trials == off_trials
    assert rows == off_rows
    assert len(rows) == sum(t[5] for t in trials)


def test_a_trial_that_leaves_the_pack_is_final_while_the_pack_trains_on(
    settings, sessions, monkeypatch
):
    """Cancelled, pruned, stopped early: each trial of the first pack has its final
    status when it leaves (cancel within one epoch), not when the pack ends; the
    trial that trains on sees them so at each of its epochs."""
    monkeypatch.setattr(pruning, "MEDIAN_CHECK_SECONDS", 0.0)
    seen: dict[int, dict[int, str]] = {}

    class Watching(QueueDispatcher):
        def cancel_requested(self, job_id: str) -> bool:
            with sessions() as session:
                job = session.get(Job, job_id)
                if job.trial_index == 0:  # it trains its 10 epochs; asked once per epoch
                    others = select(Job).where(Job.sweep_id == job.sweep_id, Job.trial_index < 4)
                    seen[self.asked[job_id] + 1] = {
                        j.trial_index: j.status for j in session.scalars(others)
                    }
            return super().cancel_requested(job_id)

    trials, _, units = run_sweep(settings, sessions, 4, "float64", Watching())
    assert len(units[0]) == 4  # trials 0-3: the first pack
    assert [trials[i][1] for i in range(4)] == ["succeeded", "succeeded", "cancelled", "pruned"]
    early_stop = trials[1][5]
    assert seen[3][3] == "pruned" and seen[3][2] == "running"  # pruned at epoch 2
    assert seen[4][2] == "cancelled"  # its flag seen at epoch 3
    assert seen[early_stop][1] == "running" and seen[early_stop + 1][1] == "succeeded"
    assert all(statuses[0] == "running" for statuses in seen.values())


@pytest.mark.parametrize("resume", ["alone", "pack"])
def test_a_pack_stopped_by_a_warm_shutdown_releases_every_trial(
    settings, sessions, monkeypatch, resume
):
    """Each trial is handed back (no attempt counted) and resumes from its checkpoint to
    the numbers of the undisturbed run: alone (as the recover pass sends them), or in a
    pack with a trial that never started (two groups: that one, then the two at epoch 4)."""
    base = copy.deepcopy(BASE)
    del base["hyperparameters"]["early_stopping"]
    body = {
        "base": base,
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.03, 0.003]}},
        "max_concurrency": 3,
        "packing": 3,
    }
    dispatcher = QueueDispatcher()
    with sessions() as session:
        sweep, ids = create_sweep(session, sweep=validate_sweep(body))
        session.commit()
    first = ids if resume == "alone" else ids[:2]
    original = pack_run.JobRun.on_epoch
    seen: Counter[str] = Counter()

    def on_epoch(run: Any, record: dict[str, Any]) -> bool:
        seen[run.job_id] += 1
        if sum(seen.values()) == len(first) * 4:  # each trial has recorded 4 epochs
            monkeypatch.setattr(SHUTDOWN, "requested", True)
        return original(run, record)

    monkeypatch.setattr(pack_run.JobRun, "on_epoch", on_epoch)
    kwargs = dict(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    assert run_pack_chain(**kwargs, job_ids=first) == {job_id: "released" for job_id in first}
    with sessions() as session:
        rows = session.scalars(select(Job).where(Job.id.in_(first))).all()
        assert {(j.status, j.released, j.attempts, j.epochs_done) for j in rows} == {
            ("running", 1, 1, 4)
        }
    monkeypatch.setattr(SHUTDOWN, "requested", False)
    monkeypatch.setattr(pack_run.JobRun, "on_epoch", original)
    if resume == "alone":
        for job_id in ids:
            run_chain(**kwargs, job_id=job_id)
    else:
        assert set(run_pack_chain(**kwargs, job_ids=ids).values()) == {"succeeded"}
    resumed = outcome(sessions, sweep.id)
    with sessions() as session:  # the same sweep, undisturbed and unpacked
        again, again_ids = create_sweep(session, sweep=validate_sweep({**body, "packing": "off"}))
        session.commit()
    for job_id in again_ids:
        run_chain(**kwargs, job_id=job_id)
    undisturbed = outcome(sessions, again.id)
    assert [t[:-1] for t in resumed[0]] == [t[:-1] for t in undisturbed[0]]  # not attempts
    assert [t[-1] for t in resumed[0]] == [2 if job_id in first else 1 for job_id in ids]
    assert resumed[1] == undisturbed[1]


def test_each_trial_of_a_pack_keeps_its_time_limit(settings, sessions):
    """A trial past its wall-clock limit leaves the pack at that epoch, ``timed_out``."""
    base = copy.deepcopy(BASE)
    del base["hyperparameters"]["early_stopping"]
    body = {
        "base": base,
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.03, 0.003]}},
        "max_concurrency": 3,
        "packing": 3,
    }
    with sessions() as session:
        sweep, ids = create_sweep(session, sweep=validate_sweep(body))
        session.commit()
    settings = settings.model_copy(update={"max_job_seconds": 1e-9})
    statuses = run_pack_chain(
        settings=settings, session_factory=sessions, dispatcher=QueueDispatcher(), job_ids=ids
    )
    assert statuses == {job_id: "timed_out" for job_id in ids}
    with sessions() as session:
        for job in session.scalars(select(Job).where(Job.id.in_(ids))):
            assert job.epochs_done == 1 and job.diagnosis[0]["code"] == "timed_out"


def test_a_pack_whose_process_died_on_this_host_is_taken_over_at_once(settings, sessions):
    """Killed holding its trials' 10-minute leases: the pack's message, sent again by
    Celery, takes every trial over now (none left ``orphaned`` to wait out its lease)."""
    base = copy.deepcopy(BASE)
    del base["hyperparameters"]["early_stopping"]
    body = {
        "base": base,
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.03]}},
        "max_concurrency": 2,
        "packing": 2,
    }
    with sessions() as session:
        _, ids = create_sweep(session, sweep=validate_sweep(body))
        session.commit()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = f"{socket.gethostname()}:{proc.pid}"
    with sessions() as session:
        session.execute(
            update(Job)
            .where(Job.id.in_(ids))
            .values(status="running", worker=dead, attempts=1)
            .values(lease_expires_at=utcnow() + timedelta(seconds=600))
        )
        session.commit()
    kwargs = dict(settings=settings, session_factory=sessions, dispatcher=QueueDispatcher())
    assert run_pack_chain(**kwargs, job_ids=ids) == {job_id: "succeeded" for job_id in ids}
    with sessions() as session:
        rows = session.scalars(select(Job).where(Job.id.in_(ids))).all()
        assert {(j.attempts, j.worker != dead) for j in rows} == {(2, True)}
