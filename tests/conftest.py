"""Shared fixtures: settings on a fresh migrated SQLite file, the Flask app and client.

Unit tests use :class:`FakeDispatcher` instead of Redis/Celery; integration
tests (tests/integration) bring real ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from services.config import Settings
from services.db import make_engine, make_session_factory, upgrade
from tests.auth_support import authorize, new_token

XOR_JOB: dict[str, Any] = {
    "name": "xor-tiny",
    "dataset": {"name": "xor", "n_samples": 64, "seed": 0},
    "architecture": {"layers": [{"units": 4, "activation": "tanh"}]},
    "hyperparameters": {"learning_rate": 0.5, "epochs": 3, "batch_size": 16},
}


class FakeDispatcher:
    """Records what would go to Celery and Redis."""

    def __init__(self) -> None:
        self.enqueued: list[str] = []
        self.cancelled: set[str] = set()
        self.range_tests: list[str] = []
        self.packs: list[list[str]] = []  # run_pack messages (their ids are in enqueued too)

    def enqueue_jobs(self, job_ids: Any) -> None:
        self.enqueued.extend(job_ids)

    def enqueue_pack(self, job_ids: Any) -> None:
        self.packs.append(list(job_ids))
        self.enqueued.extend(job_ids)  # each id too: a test may run them one by one

    def enqueue_units(self, units: Any) -> None:
        for unit in units:
            self.enqueue_pack(unit) if len(unit) > 1 else self.enqueue_jobs(unit)

    def enqueue_range_tests(self, test_ids: Any) -> None:
        self.range_tests.extend(test_ids)

    def request_cancel(self, job_ids: Any) -> None:
        self.cancelled.update(job_ids)

    def cancel_requested(self, job_id: str) -> bool:
        return job_id in self.cancelled

    def waiting_job_ids(self, *, fresh_seconds: float, task: str = "") -> set[str]:
        return set()  # nothing is queued for real: every message counts as lost

    def queue_depths(self) -> tuple[dict[str, int], int]:
        return {"sweeplab": len(self.enqueued)}, 0  # nothing consumes them

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session; tests get copies."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def settings(tmp_path: Path, migrated_sqlite: Path) -> Settings:
    db = tmp_path / "sweeplab.db"
    shutil.copy(migrated_sqlite, db)
    return Settings.from_env({}).replace(
        database_url=f"sqlite:///{db}",
        mlflow_tracking_uri=None,
        mlflow_ui_url=None,
        flush_seconds=0.0,
        checkpoint_every=1,
    )


@pytest.fixture
def dispatcher() -> FakeDispatcher:
    return FakeDispatcher()


@pytest.fixture
def app(settings: Settings, dispatcher: FakeDispatcher):
    from api import create_app

    app = create_app(settings, dispatcher=dispatcher)  # type: ignore[arg-type]
    app.config["TESTING"] = True
    yield app
    app.extensions["sweeplab"].engine.dispose()


@pytest.fixture
def admin_token(app) -> str:
    """A token of the admin user in the app's database."""
    return new_token(app.extensions["sweeplab"].sessions)


@pytest.fixture
def client(app, admin_token):
    """The app's test client, sending an admin's token with every request."""
    return authorize(app.test_client(), admin_token)


@pytest.fixture
def sessions(settings: Settings):
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory):
    """A real MLflow server (started as `make up` starts it) for one test module."""
    from tests.e2e.mlflow_support import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
