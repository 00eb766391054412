"""Database models, engines and migrations."""

from __future__ import annotations

from pathlib import Path

from services.db.models import (
    ACTIVE_STATUSES,
    JOB_STATUSES,
    TERMINAL_STATUSES,
    ApiToken,
    Base,
    Dataset,
    DatasetBlob,
    Job,
    JobCheckpoint,
    JobMetric,
    JobWeights,
    MlflowDeletion,
    Sweep,
    User,
)
from services.db.session import ReadOnlySessionError, begin_read, make_engine, make_session_factory

REPO_ROOT = Path(__file__).resolve().parents[2]

__all__ = [
    "ACTIVE_STATUSES",
    "JOB_STATUSES",
    "TERMINAL_STATUSES",
    "ApiToken",
    "Base",
    "Dataset",
    "DatasetBlob",
    "Job",
    "JobCheckpoint",
    "JobMetric",
    "JobWeights",
    "MlflowDeletion",
    "ReadOnlySessionError",
    "Sweep",
    "User",
    "alembic_config",
    "begin_read",
    "make_engine",
    "make_session_factory",
    "upgrade",
]


def alembic_config(database_url: str):  # -> alembic.config.Config
    """An Alembic config for ``database_url`` using the repository's migrations."""
    from alembic.config import Config  # late: only `upgrade` callers (not the API or workers)

    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False  # leave the caller's logging alone
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Run ``alembic upgrade`` on ``database_url``."""
    from alembic import command  # late: only `upgrade` callers (not the API or workers)

    command.upgrade(alembic_config(database_url), revision)
