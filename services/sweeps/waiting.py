"""Sweeps that wait on a range test go on as soon as it ends (the recover pass would
too, a little later: a waiting sweep has no active trial)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.celery_app import Dispatcher
from services.config import Settings
from services.db.models import Sweep
from services.sweeps.scheduler import advance_and_enqueue


def advance_waiting(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    test_id: str,
) -> list[str]:
    """Advance the running sweeps whose bounds come from range test ``test_id``;
    returns the trials they created."""
    with session_factory() as session:
        stmt = select(Sweep.id).where(Sweep.range_test_id == test_id, Sweep.status == "running")
        sweep_ids = list(session.scalars(stmt))
        session.commit()
    created: list[str] = []
    for sweep_id in sweep_ids:
        created += advance_and_enqueue(
            settings=settings,
            session_factory=session_factory,
            dispatcher=dispatcher,
            sweep_id=sweep_id,
        )
    return created
