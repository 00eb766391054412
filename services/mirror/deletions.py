"""The MLflow runs of deleted jobs and sweeps: marked deleted in MLflow, never lost.

Deleting a job or a sweep (``services.jobs.deletion``) writes, in the transaction
that deletes its rows, one ``mlflow_deletions`` row: what it was (``job`` or
``sweep``), its id, and the run the database knew. The mirror then marks the
runs deleted (``MlflowClient.delete_run``: MLflow's lifecycle stage ``deleted``,
restorable from MLflow until its garbage collection): the run it knew, and
every active run of sweeplab's experiments tagged with that id
(``sweeplab.job_id``; ``sweeplab.sweep_id`` for a sweep's parent run and all its
trials' runs). Searching by tag also finds a run that a mirror pass created
but could not record (its row was gone).

MLflow down: the row stays, the ``sweeplab.mirror_deletions`` task retries, and
every catch-up pass (``catch_up.mirror_pending``) tries again. A row is done
when a pass that succeeds comes at least :data:`GRACE_SECONDS` after the
deletion: a mirror pass that was under way then (one holds its lock for at
most that long) may still have created a run, which that pass finds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from services.db.models import MlflowDeletion, utcnow
from services.mirror.entities import MANAGED_TAG
from services.mirror.names import clip, enabled
from services.mirror.plumbing import (
    LOCK_SECONDS,
    LOW_PRIORITY,
    MIRROR_DELETIONS_TASK,
    mlflow_client,
    send_task,
    session_scope,
)

log = logging.getLogger(__name__)

GRACE_SECONDS = LOCK_SECONDS
TAGS = {"job": "sweeplab.job_id", "sweep": "sweeplab.sweep_id"}
PAGE = 1000


def record_deletion(session: Session, kind: str, entity_id: str, run_id: str | None) -> None:
    """Note (in the caller's transaction) that the runs of the ``kind`` ``entity_id``
    are to be deleted in MLflow."""
    if kind not in TAGS:
        raise ValueError(f"kind is one of {sorted(TAGS)}, not {kind!r}")
    session.add(MlflowDeletion(kind=kind, entity_id=entity_id, run_id=run_id, created_at=utcnow()))


def runs_deleted(settings: Any) -> None:
    """Ask a worker to carry out the pending deletions now (returns at once; if the
    message cannot be sent, the next catch-up pass does it)."""
    if not enabled(settings):
        return
    try:
        send_task(settings, MIRROR_DELETIONS_TASK, [], priority=LOW_PRIORITY)
    except Exception:
        log.warning("could not enqueue the MLflow deletions", exc_info=True)


def pending(settings: Any, limit: int) -> list[tuple[int, str, str, str | None, Any]]:
    """(id, kind, entity id, run id, created at) of the oldest pending deletions."""
    stmt = select(
        MlflowDeletion.id,
        MlflowDeletion.kind,
        MlflowDeletion.entity_id,
        MlflowDeletion.run_id,
        MlflowDeletion.created_at,
    )
    with session_scope(settings) as session:
        rows = session.execute(stmt.order_by(MlflowDeletion.id).limit(limit)).all()
        session.rollback()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def carry_out(settings: Any, deletion: tuple[int, str, str, str | None, Any]) -> int:
    """Mark the runs of one pending deletion deleted in MLflow; forget the deletion
    once the grace period is over. Returns how many runs it deleted; raises what
    MLflow raised (the deletion is then kept, its error noted)."""
    row_id, kind, entity_id, run_id, created_at = deletion
    started = utcnow()
    try:
        n = delete_runs(mlflow_client(settings), kind, entity_id, run_id)
    except Exception as err:
        with session_scope(settings) as session:
            session.execute(
                update(MlflowDeletion)
                .where(MlflowDeletion.id == row_id)
                .values(
                    attempts=MlflowDeletion.attempts + 1,
                    last_error=clip(f"{type(err).__name__}: {err}", 500),
                )
            )
            session.commit()
        raise
    with session_scope(settings) as session:
        if started - created_at >= timedelta(seconds=GRACE_SECONDS):
            session.execute(delete(MlflowDeletion).where(MlflowDeletion.id == row_id))
        else:
            session.execute(
                update(MlflowDeletion)
                .where(MlflowDeletion.id == row_id)
                .values(attempts=MlflowDeletion.attempts + 1, last_error=None)
            )
        session.commit()
    return n


def delete_runs(client: Any, kind: str, entity_id: str, run_id: str | None) -> int:
    """Mark deleted the run ``run_id`` and every active run of sweeplab's experiments
    tagged with ``entity_id``; returns how many it marked."""
    from mlflow.exceptions import MlflowException  # late: heavy (mlflow)

    ids = set(_tagged_runs(client, TAGS[kind], entity_id))
    if run_id:
        ids.add(run_id)
    done = 0
    for rid in sorted(ids):
        try:
            client.delete_run(rid)
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            continue  # gone already (garbage-collected)
        done += 1
    return done


def _tagged_runs(client: Any, tag: str, value: str) -> Iterator[str]:
    from mlflow.entities import ViewType  # late: heavy (mlflow)

    experiments = [
        e.experiment_id
        for e in client.search_experiments(
            view_type=ViewType.ACTIVE_ONLY,
            filter_string=f"tags.`{MANAGED_TAG}` = 'true'",
            max_results=PAGE,
        )
    ]
    for start in range(0, len(experiments), 100):
        token = None
        while True:
            page = client.search_runs(
                experiments[start : start + 100],
                filter_string=f"tags.`{tag}` = '{value}'",
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=PAGE,
                page_token=token,
            )
            yield from (run.info.run_id for run in page)
            token = page.token
            if not token:
                break
