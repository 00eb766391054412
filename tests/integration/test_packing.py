"""Trial packing through a real worker: a packed sweep's trials run as ``run_pack``
messages and end with the rows, metrics and outcome of the same sweep unpacked; a
worker process killed (SIGKILL) mid-pack leaves each trial its checkpoint, and the
resumed trials end with the numbers of the undisturbed run; SIGTERM releases every
trial of a pack."""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.specs import trainer_spec
from services.trainer import fit
from tests.integration.harness import Stack, wait_for
from tests.integration.test_warm_shutdown import start_worker

pytestmark = pytest.mark.integration

RATES = [0.003, 0.01, 0.03, 0.1]


def sweep_body(name: str, packing: Any, *, epochs: int, n_samples: int) -> dict[str, Any]:
    return {
        "name": name,
        "base": {
            "reuse": False,  # each sweep trains (an identical trial would be copied)
            "dataset": {"name": "moons", "n_samples": n_samples, "noise": 0.2, "seed": 0},
            "architecture": {"layers": [{"units": 32}, {"units": 32}]},
            "hyperparameters": {
                "learning_rate": 0.1,
                "epochs": epochs,
                "batch_size": 32,
                "momentum": 0.9,
            },
        },
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": RATES}},
        "max_concurrency": 4,
        "packing": packing,
    }


@pytest.fixture(scope="module")
def stack(redis_base: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """SQLite, one worker of two processes, leases of 3 s."""
    s = Stack("sqlite", tmp_path_factory.mktemp("packing"), redis_base)
    try:
        s.start_worker(concurrency=2)
        yield s
    finally:
        s.close()


def outcome(stack: Stack, sweep_id: str) -> list[Any]:
    """Each trial as the API shows it, and its epochs, without wall times and ids."""
    trials = []
    for job in stack.sweep_jobs(sweep_id):
        page = stack.get(f"/jobs/{job.id}/metrics")["epochs"]
        epochs = [{k: v for k, v in e["metrics"].items() if k != "seconds"} for e in page]
        trials.append(
            (
                job.trial_index,
                job.status,
                job.params,
                job.best_epoch,
                job.objective,
                job.epochs_done,
                job.diagnosis,
                epochs,
            )
        )
    return trials


def leaderboard(stack: Stack, sweep_id: str) -> list[dict[str, Any]]:
    items = stack.get(f"/sweeps/{sweep_id}/leaderboard?limit=100")["items"]
    return [{k: v for k, v in row.items() if k != "job_id"} for row in items]


def test_a_packed_sweep_equals_the_unpacked_one(stack: Stack):
    packed = stack.post("/sweeps", sweep_body("packed", 2, epochs=6, n_samples=1000))
    done = stack.wait_sweep(packed["id"], timeout=120)
    assert done["status"] == "done" and done["counts"]["succeeded"] == len(RATES)
    jobs = stack.sweep_jobs(packed["id"])
    # two packs of two (trials dealt in turn): each pair trained in one worker process
    assert jobs[0].worker == jobs[2].worker and jobs[1].worker == jobs[3].worker
    assert "sweeplab.run_pack" in stack.logs()
    assert {j.attempts for j in jobs} == {1}
    off = stack.post("/sweeps", sweep_body("off", "off", epochs=6, n_samples=1000))
    stack.wait_sweep(off["id"], timeout=120)
    assert outcome(stack, packed["id"]) == outcome(stack, off["id"])
    assert leaderboard(stack, packed["id"]) == leaderboard(stack, off["id"])


def test_a_pack_killed_mid_way_resumes_to_the_undisturbed_numbers(stack: Stack):
    # ~100 ms an epoch: the resumed pack outlives its trials' 3 s leases, which its lease
    # keepers and flushes renew (a lapse would let a recover pass take a trial over)
    body = sweep_body("killed", 4, epochs=80, n_samples=20_000)
    sweep = stack.post("/sweeps", body)
    ids = [j.id for j in stack.sweep_jobs(sweep["id"])]
    wait_for(
        lambda: all(stack.job(i).epochs_done >= 6 for i in ids), 120, "six epochs of each trial"
    )
    workers = {stack.job(i).worker for i in ids}
    assert len(workers) == 1  # one process trains the pack
    victim = int(workers.pop().rsplit(":", 1)[1])
    os.kill(victim, signal.SIGKILL)
    # Celery sends the pack's message again (the process died holding it): its trials are
    # taken over at once (their holder is a dead process of this host) and resume
    # together, each from its checkpoint (or alone, if a recover pass sent them first).
    stopped_at = {i: stack.job(i).epochs_done for i in ids}
    assert all(n < 80 for n in stopped_at.values())
    done = stack.wait_sweep(sweep["id"], timeout=300)
    assert done["counts"]["succeeded"] == len(RATES)
    for job in stack.sweep_jobs(sweep["id"]):
        assert job.attempts == 2 and int(job.worker.rsplit(":", 1)[1]) != victim
        assert stack.epochs(job.id) == list(range(1, 81))  # every epoch once
        reference = fit(copy.deepcopy(trainer_spec(job.spec)))
        page = stack.get(f"/jobs/{job.id}/metrics")["epochs"]
        assert [e["metrics"]["val_loss"] for e in page] == [
            r["val_loss"] for r in reference.history
        ]
        assert [e["metrics"]["train_loss"] for e in page] == [
            r["train_loss"] for r in reference.history
        ]
        assert job.best_epoch == reference.best_epoch


@pytest.fixture
def fresh(redis_base: str, tmp_path: Path) -> Iterator[Stack]:
    """A stack whose workers this test starts and stops."""
    s = Stack("sqlite", tmp_path, redis_base)
    try:
        yield s
    finally:
        s.close()


def test_sigterm_releases_every_trial_of_the_pack(fresh: Stack):
    """A warm shutdown stops the pack at a batch boundary and hands every trial back (no
    attempt counted); the next worker resumes them, together, to the undisturbed numbers."""
    worker = start_worker(fresh)
    sweep = fresh.post("/sweeps", sweep_body("sigterm", 4, epochs=80, n_samples=20_000))
    ids = [j.id for j in fresh.sweep_jobs(sweep["id"])]
    wait_for(lambda: all(fresh.job(i).epochs_done >= 6 for i in ids), 120, "six epochs each")
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    for job_id in ids:
        job = fresh.job(job_id)
        assert job.status == "running", fresh.logs()
        assert (job.attempts, job.released, job.worker) == (1, 1, None)  # no attempt lost
        assert job.epochs_done < 80
    start_worker(fresh)  # the pack's trials were sent again, as one pack
    done = fresh.wait_sweep(sweep["id"], timeout=300)
    assert done["counts"]["succeeded"] == len(RATES)
    jobs = fresh.sweep_jobs(sweep["id"])
    assert len({j.worker for j in jobs}) == 1  # resumed together
    for job in jobs:
        assert (job.attempts, job.released) == (2, 1)
        assert fresh.epochs(job.id) == list(range(1, 81))
        reference = fit(copy.deepcopy(trainer_spec(job.spec)))
        page = fresh.get(f"/jobs/{job.id}/metrics")["epochs"]
        assert [e["metrics"]["val_loss"] for e in page] == [
            r["val_loss"] for r in reference.history
        ]


def test_a_killed_pack_is_taken_over_before_its_leases_run_out(fresh: Stack):
    """With 10-minute leases, a pack whose process was SIGKILLed is trained on by the
    process Celery starts in its place, from each trial's checkpoint, without waiting
    for the leases: the holder is a process of this host that is gone."""
    fresh.env["SWEEPLAB_LEASE_SECONDS"] = "600"
    fresh.start_worker(concurrency=2)
    sweep = fresh.post("/sweeps", sweep_body("taken-over", 4, epochs=60, n_samples=20_000))
    ids = [j.id for j in fresh.sweep_jobs(sweep["id"])]
    wait_for(lambda: all(fresh.job(i).epochs_done >= 6 for i in ids), 120, "six epochs each")
    workers = {fresh.job(i).worker for i in ids}
    assert len(workers) == 1
    victim = int(workers.pop().rsplit(":", 1)[1])
    os.kill(victim, signal.SIGKILL)
    done = fresh.wait_sweep(sweep["id"], timeout=240)  # the leases would hold for 600 s
    assert done["counts"]["succeeded"] == len(RATES), fresh.logs()
    for job in fresh.sweep_jobs(sweep["id"]):
        assert job.attempts == 2 and int(job.worker.rsplit(":", 1)[1]) != victim
        assert fresh.epochs(job.id) == list(range(1, 61))  # every epoch once
    job = fresh.sweep_jobs(sweep["id"])[0]
    reference = fit(copy.deepcopy(trainer_spec(job.spec)))
    page = fresh.get(f"/jobs/{job.id}/metrics")["epochs"]
    assert [e["metrics"]["val_loss"] for e in page] == [r["val_loss"] for r in reference.history]
