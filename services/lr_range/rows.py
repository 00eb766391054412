"""Range test rows: create, read, list, and their status transitions.

Helpers flush but never commit: the caller owns the transaction. Every status
change is a compare-and-set UPDATE fenced by ``attempts``: a message delivered
twice, or a worker whose lease ran out, cannot overwrite a result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from services.db.models import LrRangeTest, utcnow
from services.db.pages import paginate

#: A claimed test is its worker's for this long at least (a test is not renewed: it is
#: one short run); after that, a redelivered message may take it over.
MIN_LEASE_SECONDS = 900.0
FINISHED = frozenset({"succeeded", "failed"})


@dataclass(frozen=True)
class RangeTestSettings:
    """How a test sweeps the rates (the defaults of ``POST /lr-range-tests``)."""

    min_lr: float = 1e-6
    max_lr: float = 10.0
    steps: int = 100
    smoothing: float = 0.98
    diverge_factor: float = 4.0


@dataclass(frozen=True)
class RangeTestOutcome:
    """Where a test stands, for a caller that waits on it (a sweep's bounds)."""

    id: str
    status: str  # queued | running | succeeded | failed
    suggested_lr: float | None
    divergence_lr: float | None  # None: no divergence up to max_lr
    min_lr: float
    max_lr: float
    error: str | None

    @property
    def done(self) -> bool:
        return self.status in FINISHED


def create_range_test(
    session: Session,
    *,
    spec: dict[str, Any],
    owner_id: str | None,
    settings: RangeTestSettings | None = None,
    name: str | None = None,
    experiment: str | None = None,
) -> LrRangeTest:
    """Insert a queued test of the normalized job ``spec`` and flush it."""
    test = LrRangeTest(
        owner_id=owner_id,
        name=name,
        experiment=experiment,
        status="queued",
        spec=spec,
        attempts=0,
        created_at=utcnow(),
        **asdict(settings or RangeTestSettings()),
    )
    session.add(test)
    session.flush()
    return test


def get_range_test(session: Session, test_id: str) -> LrRangeTest | None:
    return session.get(LrRangeTest, test_id)


def list_range_tests(
    session: Session,
    *,
    owner_id: str | None,
    statuses: list[str] | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[LrRangeTest], str | None]:
    """Tests newest first (``owner_id`` None: everyone's); raises BadCursorError."""
    stmt = select(LrRangeTest)
    if owner_id is not None:
        stmt = stmt.where(LrRangeTest.owner_id == owner_id)
    if statuses:
        stmt = stmt.where(LrRangeTest.status.in_(statuses))
    return paginate(session, LrRangeTest, stmt, cursor=cursor, limit=limit)


def range_test_result(session: Session, test_id: str) -> RangeTestOutcome | None:
    """The test's status and reading (None for an unknown id)."""
    test = session.get(LrRangeTest, test_id)
    if test is None:
        return None
    return RangeTestOutcome(
        id=test.id,
        status=test.status,
        suggested_lr=test.suggested_lr,
        divergence_lr=test.divergence_lr,
        min_lr=test.min_lr,
        max_lr=test.max_lr,
        error=test.error,
    )


def claim_range_test(
    session: Session,
    *,
    test_id: str,
    worker: str,
    lease_seconds: float,
    max_attempts: int,
    dead_holder: tuple[str, int] | None = None,
) -> LrRangeTest | None:
    """Take a queued test, or a running one whose lease ran out; None if neither.

    ``dead_holder`` (worker name, attempt): also take the test from that attempt, whose
    process is known to be gone (it died on this host), without waiting for its lease.
    """
    now = utcnow()
    lease = max(lease_seconds, MIN_LEASE_SECONDS)
    lapsed = LrRangeTest.lease_expires_at < now
    if dead_holder is not None:
        lapsed = or_(
            lapsed,
            and_(LrRangeTest.worker == dead_holder[0], LrRangeTest.attempts == dead_holder[1]),
        )
    takeover = and_(LrRangeTest.status == "running", lapsed, LrRangeTest.attempts < max_attempts)
    return session.scalars(
        update(LrRangeTest)
        .where(LrRangeTest.id == test_id, or_(LrRangeTest.status == "queued", takeover))
        .values(
            status="running",
            worker=worker,
            attempts=LrRangeTest.attempts + 1,
            lease_expires_at=now + timedelta(seconds=lease),
            started_at=func.coalesce(LrRangeTest.started_at, now),
        )
        .returning(LrRangeTest),
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).one_or_none()


def finish_range_test(
    session: Session,
    *,
    test_id: str,
    attempt: int,
    status: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    seconds: float | None = None,
) -> bool:
    """Record the outcome of ``attempt``; False if the test is no longer its own."""
    result = result or {}
    done = session.execute(
        update(LrRangeTest)
        .where(
            LrRangeTest.id == test_id,
            LrRangeTest.status == "running",
            LrRangeTest.attempts == attempt,
        )
        .values(
            status=status,
            result=result or None,
            suggested_lr=result.get("suggested_lr"),
            divergence_lr=result.get("divergence_lr"),
            error=error,
            seconds=seconds,
            finished_at=utcnow(),
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(done, "rowcount", 0))


def fail_unstarted(session: Session, test_id: str, error: str) -> bool:
    """Fail a test that no worker will run (its message could not be sent, or its
    workers were lost too often); False if it had finished."""
    done = session.execute(
        update(LrRangeTest)
        .where(LrRangeTest.id == test_id, LrRangeTest.status.in_(("queued", "running")))
        .values(status="failed", error=error, finished_at=utcnow(), lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(done, "rowcount", 0))
