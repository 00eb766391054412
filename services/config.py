"""Settings from the environment, built at each entry point (never at import time)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """What one job or sweep may ask for; each is overridable by ``SWEEPLAB_MAX_<NAME>``."""

    max_layers: int = 20
    max_units: int = 4096
    max_params: int = 5_000_000
    max_epochs: int = 10_000
    max_samples: int = 200_000
    max_dataset_values: int = 20_000_000  # n_samples x n_features of a synthetic set
    max_trials: int = 1_000
    max_concurrency: int = 64
    max_body_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    mlflow_tracking_uri: str | None = "http://127.0.0.1:5000"
    mlflow_ui_url: str | None = None
    celery_queue: str = "sweeplab"
    # Above the longest job: Redis redelivers an unacknowledged message after this.
    visibility_timeout: int = 12 * 3600
    # A running job's owner renews its lease at each flush; another worker may
    # take over (and resume from the latest checkpoint) once it has expired.
    lease_seconds: float = 60.0
    # A worker that dies mid-job (out of memory, killed) costs an attempt; a job that
    # has used this many is failed instead of being handed to the next worker.
    max_attempts: int = 5
    # A job still queued after this long may have lost its message (the sender
    # died between commit and send, or Redis lost it): the recover task sends it again.
    requeue_seconds: float = 300.0
    # How often each worker asks for a recover pass (at most one runs per period).
    recover_seconds: float = 30.0
    # How often each worker asks for an MLflow catch-up pass (at most one per period).
    mirror_catch_up_seconds: float = 60.0
    checkpoint_every: int = 10
    flush_seconds: float = 0.5
    blas_threads: int = 1
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        home = Path(env.get("SWEEPLAB_HOME") or Path.cwd())
        database_url = env.get("DATABASE_URL") or f"sqlite:///{home / 'var' / 'sweeplab.db'}"
        tracking = env.get("MLFLOW_TRACKING_URI", cls.mlflow_tracking_uri) or None
        limits = Limits(
            **{
                f.name: int(env[f"SWEEPLAB_{f.name.upper()}"])
                for f in fields(Limits)
                if env.get(f"SWEEPLAB_{f.name.upper()}")
            }
        )
        return cls(
            database_url=database_url,
            redis_url=env.get("REDIS_URL") or cls.redis_url,
            mlflow_tracking_uri=tracking,
            mlflow_ui_url=env.get("MLFLOW_UI_URL") or tracking,
            celery_queue=env.get("SWEEPLAB_QUEUE") or cls.celery_queue,
            visibility_timeout=int(
                env.get("SWEEPLAB_VISIBILITY_TIMEOUT") or cls.visibility_timeout
            ),
            lease_seconds=float(env.get("SWEEPLAB_LEASE_SECONDS") or cls.lease_seconds),
            max_attempts=int(env.get("SWEEPLAB_MAX_ATTEMPTS") or cls.max_attempts),
            requeue_seconds=float(env.get("SWEEPLAB_REQUEUE_SECONDS") or cls.requeue_seconds),
            recover_seconds=float(env.get("SWEEPLAB_RECOVER_SECONDS") or cls.recover_seconds),
            mirror_catch_up_seconds=float(
                env.get("SWEEPLAB_MIRROR_CATCH_UP_SECONDS") or cls.mirror_catch_up_seconds
            ),
            checkpoint_every=int(env.get("SWEEPLAB_CHECKPOINT_EVERY") or cls.checkpoint_every),
            flush_seconds=float(env.get("SWEEPLAB_FLUSH_SECONDS") or cls.flush_seconds),
            blas_threads=int(env.get("SWEEPLAB_BLAS_THREADS") or cls.blas_threads),
            limits=limits,
        )

    def replace(self, **changes: object) -> Settings:
        """Return a copy with ``changes`` applied (handy in tests)."""
        return replace(self, **changes)  # type: ignore[arg-type]
