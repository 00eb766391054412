"""A learning-rate range test through a real worker: POST, wait, read the curve and the
suggested rate, the PNG; a redelivered message is a no-op; a test that raises is failed
with its error (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
import os
import re
import signal
from datetime import timedelta

import pytest
from sqlalchemy import update

from services.celery_app import RECOVER, control_queue
from services.db.models import LrRangeTest, utcnow
from services.lr_range import create_range_test, range_test_result
from services.lr_range.start import enqueue_range_test
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPEC = {
    "dataset": {"name": "digits"},
    "architecture": {"layers": [{"units": 32}]},
    "hyperparameters": {"learning_rate": 0.01, "optimizer": "adam", "batch_size": 32},
}


def wait_test(stack: Stack, test_id: str, timeout: float = 60) -> dict:
    def done() -> dict | None:
        test = stack.get(f"/lr-range-tests/{test_id}")
        return test if test["status"] in ("succeeded", "failed") else None

    try:
        return wait_for(done, timeout, f"range test {test_id}", interval=0.1)
    except AssertionError:
        print(stack.logs())
        raise


def test_a_range_test_runs_in_a_worker(stack: Stack):
    body = {"spec": copy.deepcopy(SPEC), "min_lr": 1e-6, "max_lr": 10.0, "steps": 150}
    test = stack.post("/lr-range-tests", body)
    assert test["status"] == "queued"
    done = wait_test(stack, test["id"])
    assert done["status"] == "succeeded", done["error"]
    assert 1e-6 <= done["suggested_lr"] <= 10.0
    assert done["divergence_lr"] is not None and done["suggested_lr"] < done["divergence_lr"]
    assert len(done["curve"]) == done["steps_taken"] <= 150
    assert done["curve"][0]["lr"] == pytest.approx(1e-6)

    png = stack.client.get(done["links"]["plot"])
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.data[:8] == PNG_MAGIC

    # The same message again (a redelivery): a no-op, the result stays as it was.
    with stack.sessions() as session:
        before = session.get(LrRangeTest, test["id"])
        assert before is not None and before.attempts == 1
        finished_at = before.finished_at
    enqueue_range_test(stack.app.extensions["sweeplab"].dispatcher, test["id"])
    pattern = re.compile(r"run_lr_range_test\[[^\]]+\] succeeded in [^:]+: 'finished'")
    wait_for(lambda: pattern.search(stack.logs()), 30, "the redelivered message")
    with stack.sessions() as session:
        after = session.get(LrRangeTest, test["id"])
        assert after is not None
        assert (after.attempts, after.finished_at, after.status) == (1, finished_at, "succeeded")
        outcome = range_test_result(session, test["id"])
    assert outcome is not None and outcome.suggested_lr == done["suggested_lr"]


def test_a_range_test_that_raises_is_failed_with_its_error(stack: Stack):
    spec = copy.deepcopy(SPEC)
    spec["hyperparameters"]["optimizer"] = "lbfgs"  # stored as is: the trainer refuses it
    with stack.sessions() as session:
        test = create_range_test(session, spec=spec, owner_id=None)
        session.commit()
        test_id = test.id
    enqueue_range_test(stack.app.extensions["sweeplab"].dispatcher, test_id)
    failed = wait_test(stack, test_id)
    assert failed["status"] == "failed" and "optimizer" in failed["error"]
    assert failed["curve"] is None and failed["suggested_lr"] is None


def test_a_range_test_whose_worker_process_dies_is_taken_over(stack: Stack):
    """SIGKILL the process running a test: Celery hands the message back, and the next
    process takes the test over at once (its holder died on this host), not after the
    lease."""
    spec = copy.deepcopy(SPEC)
    spec["architecture"]["layers"] = [{"units": 256}, {"units": 256}]
    spec["hyperparameters"]["batch_size"] = 256
    body = {"spec": spec, "min_lr": 1e-7, "max_lr": 1e-5, "steps": 2000}  # ~3 s, no divergence
    test = stack.post("/lr-range-tests", body)

    def running() -> LrRangeTest | None:
        with stack.sessions() as session:
            row = session.get(LrRangeTest, test["id"])
            return row if row is not None and row.status == "running" else None

    row = wait_for(running, 30, "the test to start")
    assert row.worker is not None and row.attempts == 1
    os.kill(int(row.worker.rpartition(":")[2]), signal.SIGKILL)
    done = wait_test(stack, test["id"], timeout=90)
    assert done["status"] == "succeeded", done["error"]
    assert done["steps_taken"] == 2000
    with stack.sessions() as session:
        after = session.get(LrRangeTest, test["id"])
        assert after is not None and after.attempts == 2 and after.worker != row.worker


def test_a_range_test_whose_message_was_lost_is_sent_again_by_the_recover_pass(stack: Stack):
    """A test committed without its message (its sender died in between): the worker's
    recover pass (the real task, on the control queue) sends it, and it runs."""
    with stack.sessions() as session:
        test = create_range_test(session, spec=copy.deepcopy(SPEC), owner_id=None)
        session.execute(
            update(LrRangeTest)
            .where(LrRangeTest.id == test.id)
            .values(created_at=utcnow() - timedelta(seconds=stack.settings.requeue_seconds + 1))
        )
        session.commit()
        test_id = test.id
    dispatcher = stack.app.extensions["sweeplab"].dispatcher
    dispatcher.celery.send_task(RECOVER, queue=control_queue(stack.settings))
    done = wait_test(stack, test_id)
    assert done["status"] == "succeeded" and done["suggested_lr"] is not None
