"""Range tests whose message was lost, or whose worker died elsewhere, are sent again by
the recover pass; those still waiting in the queue are not; hopeless ones are failed."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from services.celery_app import RUN_RANGE_TEST
from services.db.models import LrRangeTest, utcnow
from services.lr_range import create_range_test
from services.lr_range.recovery import recover_range_tests
from tests.conftest import XOR_JOB, FakeDispatcher


class Queue(FakeDispatcher):
    """A fake whose queue still holds the messages of ``waiting`` (for RUN_RANGE_TEST)."""

    def __init__(self, waiting: set[str]):
        super().__init__()
        self.waiting, self.asked = waiting, []

    def waiting_job_ids(self, *, fresh_seconds: float, task: str = "") -> set[str]:
        self.asked.append(task)
        return self.waiting if task == RUN_RANGE_TEST else set()


def _tests(sessions, settings, **states) -> dict[str, str]:
    ids = {}
    with sessions() as session:
        for label, values in states.items():
            test = create_range_test(session, spec=dict(XOR_JOB), owner_id=None)
            if values:
                stmt = update(LrRangeTest).where(LrRangeTest.id == test.id).values(**values)
                session.execute(stmt)
            ids[label] = test.id
        session.commit()
    return ids


def test_lost_tests_are_sent_again_and_hopeless_ones_failed(sessions, settings):
    past = utcnow() - timedelta(seconds=1)
    ago = utcnow() - timedelta(seconds=settings.requeue_seconds + 5)
    ids = _tests(
        sessions,
        settings,
        fresh={},  # queued a moment ago: its message is surely on its way
        lost={"created_at": ago},
        waiting={"created_at": ago},
        orphan={"status": "running", "attempts": 1, "lease_expires_at": past},
        alive={
            "status": "running",
            "attempts": 1,
            "lease_expires_at": utcnow() + timedelta(minutes=1),
        },
        hopeless={"status": "running", "attempts": settings.max_attempts, "lease_expires_at": past},
        done={"status": "succeeded", "created_at": ago},
    )
    queue = Queue({ids["waiting"]})
    out = recover_range_tests(settings=settings, session_factory=sessions, dispatcher=queue)
    assert sorted(out["sent"]) == sorted([ids["lost"], ids["orphan"]])
    assert sorted(queue.range_tests) == sorted(out["sent"])
    assert out["waiting"] == [ids["waiting"]] and out["failed"] == [ids["hopeless"]]
    assert queue.asked == [RUN_RANGE_TEST]
    with sessions() as session:
        hopeless = session.get(LrRangeTest, ids["hopeless"])
        assert hopeless is not None and hopeless.status == "failed"
        assert f"lost {settings.max_attempts} times" in (hopeless.error or "")
    again = Queue(set())
    assert (
        recover_range_tests(settings=settings, session_factory=sessions, dispatcher=again)["failed"]
        == []
    )  # failed once
