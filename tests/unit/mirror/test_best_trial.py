"""A sweep's best trial marked in MLflow as it changes (services.mirror.models): trials end
one by one (rows in a real SQLite database, the ranking's own rule); a client that
keeps the tags in memory stands for MLflow (the e2e test runs the real server)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from services.db import make_engine, make_session_factory
from services.db.models import Job, Sweep
from services.mirror.models import BEST_RUN_TAG, BEST_TAG, BEST_TRIAL_TAG, mark_if_best
from services.mirror.snapshots import load_job


class TagClient:
    """The calls ``mark_if_best`` makes, on runs kept as dicts of tags."""

    def __init__(self) -> None:
        self.tags: dict[str, dict[str, str]] = {}
        self.calls = 0

    def get_run(self, run_id: str) -> Any:
        self.calls += 1
        return SimpleNamespace(data=SimpleNamespace(tags=dict(self.tags.get(run_id, {}))))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.calls += 1
        self.tags.setdefault(run_id, {})[key] = value

    def log_batch(self, run_id: str, tags: list[Any], synchronous: bool = True) -> None:
        self.calls += 1
        for tag in tags:
            self.tags.setdefault(run_id, {})[tag.key] = tag.value


def test_the_best_so_far_is_marked_as_trials_end(settings):
    sessions = make_session_factory(make_engine(settings.database_url))
    spec = {"hyperparameters": {"epochs": 3}}
    with sessions() as session:
        sweep = Sweep(
            method="grid",
            spec={},
            objective_metric="val_loss",
            objective_goal="minimize",
            max_concurrency=3,
            n_trials=3,
            mlflow_run_id="parent",
        )
        session.add(sweep)
        session.flush()
        jobs = [
            Job(sweep_id=sweep.id, trial_index=i, status="running", spec=spec, epochs_total=3)
            for i in range(3)
        ]
        session.add_all(jobs)
        session.commit()
        ids = [j.id for j in jobs]
    client = TagClient()

    def ends(i: int, objective: float, status: str = "succeeded") -> bool:
        with sessions() as session:
            job = session.get(Job, ids[i])
            job.status, job.objective = status, objective
            session.commit()
            snap = load_job(session, ids[i], after_epoch=None)
        assert snap is not None
        return mark_if_best(settings, client, snap, f"run-{i}")

    assert ends(1, 0.5)  # the first to end is the best so far
    assert client.tags["parent"] == {BEST_TRIAL_TAG: ids[1], BEST_RUN_TAG: "run-1"}
    assert client.tags["run-1"] == {BEST_TAG: "true"}
    calls = client.calls
    assert not ends(2, 0.9)  # worse: one query of the database, no MLflow call
    assert client.calls == calls and "run-2" not in client.tags
    assert not ends(0, 0.1, status="diverged")  # a diverged trial never beats a succeeded one
    assert ends(0, 0.2) and ends(0, 0.2)  # better; a pass redone changes nothing
    assert client.tags["parent"] == {BEST_TRIAL_TAG: ids[0], BEST_RUN_TAG: "run-0"}
    assert client.tags["run-0"] == {BEST_TAG: "true"}
    assert client.tags["run-1"] == {BEST_TAG: "false"}
