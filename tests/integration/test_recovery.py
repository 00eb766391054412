"""Recovery against real Redis and real workers: a job is sent again only when its
message is gone, a duplicate that meets a live lease is dropped at once, and a sweep
that breaks while it advances ends alone."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import update

from services.celery_app import (
    RUN_JOB,
    UNACKED_INDEX_KEY,
    UNACKED_KEY,
    Dispatcher,
    control_queue,
    run_job_id,
)
from services.db.models import Job, Sweep, utcnow
from services.jobs.recovery import Recovered, recover
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.integration


def job_spec(*, epochs: int = 5, n_samples: int = 64, dataset: str = "xor") -> dict[str, Any]:
    return {
        "dataset": {"name": dataset, "n_samples": n_samples, "seed": 0},
        "architecture": {"layers": [{"units": 4, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": 0.5, "epochs": epochs, "batch_size": 16},
    }


def sweep_spec(base: dict[str, Any], n: int = 3) -> dict[str, Any]:
    return {
        "name": "rec",
        "base": base,
        "method": "grid",
        "parameters": {
            "hyperparameters.learning_rate": {"values": [0.1 * (i + 1) for i in range(n)]}
        },
        "max_concurrency": 1,
    }


@pytest.fixture
def idle(redis_base: str, tmp_path: Path) -> Iterator[Stack]:
    """A stack whose queue no worker consumes: messages stay where they are."""
    s = Stack("sqlite", tmp_path, redis_base)
    try:
        yield s
    finally:
        s.close()


def make_stale(stack: Stack, job_ids: list[str]) -> None:
    old = utcnow() - timedelta(seconds=stack.settings.requeue_seconds + 10)
    with stack.sessions() as session:
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(updated_at=old))
        session.commit()


def recover_pass(stack: Stack) -> Recovered:
    dispatcher = Dispatcher(stack.settings)
    try:
        return recover(
            settings=stack.settings, session_factory=stack.sessions, dispatcher=dispatcher
        )
    finally:
        dispatcher.close()


def queued_ids(r: redis.Redis, queue: str) -> list[str | None]:
    return [run_job_id(raw) for raw in r.lrange(queue, 0, -1)]


def test_messages_still_queued_are_not_sent_again(idle: Stack):
    ids = [idle.post("/jobs", job_spec())["id"] for _ in range(3)]
    r = redis.Redis.from_url(idle.redis_url)
    assert sorted(queued_ids(r, idle.queue)) == sorted(ids)  # parsed from kombu's bodies
    for _ in range(5):
        make_stale(idle, ids)
        done = recover_pass(idle)
        assert done.requeued == [] and sorted(done.waiting) == sorted(ids)
    assert r.llen(idle.queue) == 3  # before: 3 + 15
    r.close()


def test_a_lost_message_is_sent_once(idle: Stack):
    ids = [idle.post("/jobs", job_spec())["id"] for _ in range(3)]
    r = redis.Redis.from_url(idle.redis_url)
    lost = ids[1]
    raw = next(m for m in r.lrange(idle.queue, 0, -1) if run_job_id(m) == lost)
    assert r.lrem(idle.queue, 1, raw) == 1  # Redis lost it
    sent = []
    for _ in range(3):
        make_stale(idle, ids)
        sent.append(recover_pass(idle).requeued)
        assert r.llen(idle.queue) == 3
    assert sent == [[lost], [], []]  # once, at the first pass
    assert sorted(queued_ids(r, idle.queue)) == sorted(ids)
    r.close()


def test_a_message_held_by_a_worker_counts_only_while_fresh(idle: Stack):
    job_id = idle.post("/jobs", job_spec())["id"]
    r = redis.Redis.from_url(idle.redis_url)
    # A worker received it and has not acknowledged it (kombu's unacked hash).
    raw = r.rpop(idle.queue)
    r.hset(UNACKED_KEY, "tag-1", json.dumps([json.loads(raw), "", idle.queue]))
    r.zadd(UNACKED_INDEX_KEY, {"tag-1": time.time()})
    make_stale(idle, [job_id])
    assert recover_pass(idle).waiting == [job_id] and r.llen(idle.queue) == 0
    # Received longer than a lease ago and the job still queued: that worker died.
    r.zadd(UNACKED_INDEX_KEY, {"tag-1": time.time() - idle.settings.lease_seconds - 1})
    make_stale(idle, [job_id])
    assert recover_pass(idle).requeued == [job_id]
    assert queued_ids(r, idle.queue) == [job_id]
    r.close()


def test_recover_passes_go_to_the_control_queue(idle: Stack):
    dispatcher = Dispatcher(idle.settings)
    try:
        dispatcher.celery.send_task("sweeplab.recover")
        r = dispatcher.redis
        assert r.llen(control_queue(idle.settings)) == 1 and r.llen(idle.queue) == 0
    finally:
        dispatcher.close()


def test_a_duplicate_of_a_running_job_is_dropped_at_once(stack: Stack):
    job_id = stack.post("/jobs", job_spec(epochs=150, n_samples=40_000, dataset="blobs"))["id"]
    wait_for(lambda: stack.job(job_id).status == "running", 30, "the job to start")
    dispatcher = Dispatcher(stack.settings)
    try:
        copy_id = dispatcher.celery.send_task(RUN_JOB, args=[job_id], queue=stack.queue).id
        wait_for(lambda: f"{copy_id}] succeeded" in stack.logs(), 20, "the duplicate to be acked")
        assert stack.job(job_id).status == "running"  # dropped while the job still ran
        assert "'duplicate'" in stack.logs().split(f"{copy_id}] succeeded", 1)[1][:200]
        held = [run_job_id(json.loads(v)[0]) for v in dispatcher.redis.hvals(UNACKED_KEY)]
        assert held.count(job_id) <= 1  # the running one only: no retry holds a slot
    finally:
        dispatcher.close()
    job = stack.wait_job(job_id, timeout=120)
    assert job.status == "succeeded" and job.attempts == 1


def test_a_sweep_that_breaks_ends_alone(stack: Stack):
    slow = job_spec(epochs=30, n_samples=20_000, dataset="blobs")
    bad = stack.post("/sweeps", sweep_spec(slow))
    good = stack.post("/sweeps", sweep_spec(job_spec(), n=3))
    with stack.sessions() as session:  # its stored spec breaks while trial 0 runs
        spec = copy.deepcopy(session.get(Sweep, bad["id"]).spec)
        spec["parameters"]["x"] = {"values": "not a list"}
        session.execute(update(Sweep).where(Sweep.id == bad["id"]).values(spec=spec))
        session.commit()
    assert stack.job(stack.sweep_jobs(bad["id"])[0].id).status in ("queued", "running")
    ended = stack.wait_sweep(bad["id"], timeout=120)
    trials = stack.sweep_jobs(bad["id"])
    assert ended["status"] == "done" and ended["counts"]["failed"] == 1
    assert [t.status for t in trials] == ["succeeded", "failed"]
    assert trials[1].error.startswith("the sweep stopped: no parameters for trial 1: ")
    other = stack.wait_sweep(good["id"], timeout=120)
    assert other["status"] == "done" and other["counts"]["succeeded"] == 3
