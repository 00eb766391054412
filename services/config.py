"""Settings from the environment (pydantic-settings), built at each entry point, never on import.

``Settings.from_env()`` reads ``os.environ``; ``Settings.from_env(mapping)``
reads a given mapping the same way (tests, the environment of a child
process). An empty variable counts as unset, except ``MLFLOW_TRACKING_URI``,
where empty means "no mirroring".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

LIMIT_PREFIX = "SWEEPLAB_"  # a limit ``max_<name>`` is read from SWEEPLAB_MAX_<NAME>


class Limits(BaseModel):
    """What one job or sweep may ask for; each is overridable by ``SWEEPLAB_MAX_<NAME>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_layers: int = 20
    max_units: int = 4096
    max_params: int = 5_000_000
    max_epochs: int = 10_000
    max_samples: int = 200_000
    max_dataset_values: int = 20_000_000  # n_samples x n_features of a synthetic set
    max_trials: int = 1_000
    max_concurrency: int = 64
    max_body_bytes: int = 1024 * 1024
    # An uploaded dataset (POST /datasets): the request body, and its stored form (X as
    # float64). 512 MiB: parsing one takes a few times that for a moment in the API process,
    # and a worker keeps it in its cache, inside this 24 GiB, 2-worker machine's budgets.
    max_dataset_bytes: int = 512 << 20
    # Budget per user: jobs queued plus running (a sweep's trials count); more is a 429.
    max_active_jobs: int = 256
    # Budgets per job (and per trial of a sweep) at submission, estimated from the spec by
    # services.budgets; over either one it is a 422. 0 turns a budget off.
    # Memory: this machine has 24 GiB for 2 worker processes (one per core) beside the API,
    # Redis, the database and MLflow; 4 GiB a job leaves two jobs at once ~16 GiB of room,
    # and stays under SWEEPLAB_WORKER_MEMORY_BYTES (6 GiB) with the process's own ~0.5-1 GiB.
    # The demo sweep's trials need ~4 MiB; the benchmark's 784-256-256-10 net on 16,384
    # inline rows ~0.4 GiB.
    max_job_memory_bytes: int = 4 << 30
    # Compute: 2 PFLOP is ~11 hours at 50 GFLOP/s (float32, one BLAS thread; ~22 h in
    # float64), a night's run on one core. The demo sweep's trials need ~2 GFLOP (a
    # million times less); blobs 200k x 100 with five 1024-unit layers over 10,000 epochs
    # needs ~46 PFLOP (~11 days at 50 GFLOP/s): refused.
    max_job_flops: float = 2e15


class Environ(EnvSettingsSource):
    """The environment (``os.environ``, or ``environ`` when given), as pydantic-settings reads it.

    Adds the ``SWEEPLAB_MAX_<NAME>`` variables as ``limits`` and drops empty values.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None):
        super().__init__(settings_cls)
        if environ is not None:
            self.env_vars = parse_env_vars(
                environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
            )

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        tracking_off = data.get("MLFLOW_TRACKING_URI") == ""
        data = {key: value for key, value in data.items() if value != ""}
        if tracking_off:
            data["MLFLOW_TRACKING_URI"] = None
        limits = {
            name: value
            for name in Limits.model_fields
            if (value := self.env_vars.get(f"{LIMIT_PREFIX}{name}".lower()))
        }
        if limits:
            data["limits"] = limits
        return data


class Settings(BaseSettings):
    """Where the stores are and how the workers pace themselves; each field names its variable."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    # Where var/ lives (the default database, the stack's state).
    home: Path | None = Field(None, validation_alias="SWEEPLAB_HOME")
    # Default: sqlite under $SWEEPLAB_HOME/var (or ./var).
    database_url: str = Field(validation_alias="DATABASE_URL")
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    mlflow_tracking_uri: str | None = Field(
        "http://127.0.0.1:5000", validation_alias="MLFLOW_TRACKING_URI"
    )
    # Default: the tracking URI (the base of the links the API hands out).
    mlflow_ui_url: str | None = Field(None, validation_alias="MLFLOW_UI_URL")
    celery_queue: str = Field("sweeplab", validation_alias="SWEEPLAB_QUEUE")
    # Above the longest job: Redis redelivers an unacknowledged message after this.
    visibility_timeout: int = Field(12 * 3600, validation_alias="SWEEPLAB_VISIBILITY_TIMEOUT")
    # A running job's owner renews its lease at each flush; another worker may
    # take over (and resume from the latest checkpoint) once it has expired.
    lease_seconds: float = Field(60.0, validation_alias="SWEEPLAB_LEASE_SECONDS")
    # A worker that dies mid-job (out of memory, killed) costs an attempt; a job that
    # has used this many is failed instead of being handed to the next worker.
    max_attempts: int = Field(5, validation_alias="SWEEPLAB_MAX_ATTEMPTS")
    # A job still queued after this long may have lost its message (the sender
    # died between commit and send, or Redis lost it): the recover task sends it again,
    # if no copy waits in the queue or was just delivered (so this can be short: it
    # only has to cover the moment between a commit and its send).
    requeue_seconds: float = Field(30.0, validation_alias="SWEEPLAB_REQUEUE_SECONDS")
    # How often each worker asks for a recover pass (at most one runs per period).
    recover_seconds: float = Field(30.0, validation_alias="SWEEPLAB_RECOVER_SECONDS")
    # How often each worker asks for an MLflow catch-up pass (at most one per period).
    mirror_catch_up_seconds: float = Field(
        60.0, validation_alias="SWEEPLAB_MIRROR_CATCH_UP_SECONDS"
    )
    # A worker process that finishes a sweep's trial runs the trial its sweep creates
    # next itself, without a round trip through the broker, for up to this long per
    # message (0: never); then it sends it like any other. Short trials spend more
    # time in Celery's delivery than in training; other messages wait this long at most.
    chain_seconds: float = Field(3.0, ge=0, validation_alias="SWEEPLAB_CHAIN_SECONDS")
    # The worker processes a sweep's packs of trials are spread over ("packing": "auto"
    # makes packs of ceil(trials at once / this), so that each process gets one; see
    # services/sweeps/packing.py): the workers' --concurrency, summed over workers.
    pack_processes: int = Field(2, ge=1, validation_alias="SWEEPLAB_PACK_PROCESSES")
    checkpoint_every: int = Field(10, validation_alias="SWEEPLAB_CHECKPOINT_EVERY")
    flush_seconds: float = Field(0.5, validation_alias="SWEEPLAB_FLUSH_SECONDS")
    blas_threads: int = Field(1, validation_alias="SWEEPLAB_BLAS_THREADS")
    # Each worker process's address space (RLIMIT_AS, bytes; 0: no limit), set by
    # worker.limits: a job that outgrows its budget estimate gets a MemoryError (a failed
    # job) instead of the kernel's OOM killer taking the worker. 6 GiB: the 4 GiB job budget
    # plus the process (interpreter, libraries, BLAS and malloc reservations), x 2 processes
    # well inside this 24 GiB machine.
    worker_memory_bytes: int = Field(6 << 30, validation_alias="SWEEPLAB_WORKER_MEMORY_BYTES")
    limits: Limits = Field(default_factory=Limits)
    # Each worker process keeps the datasets its jobs trained on, by content hash, up to
    # this many bytes (least recently used out first): a sweep's trials read theirs once.
    dataset_cache_bytes: int = Field(1 << 30, validation_alias="SWEEPLAB_DATASET_CACHE_BYTES")
    # How a run paces its checkpoints and when it gives up (services.jobs.limits.RunLimits):
    # a checkpoint at the first epoch boundary after this much training since the last,
    checkpoint_seconds: float = Field(60.0, validation_alias="SWEEPLAB_CHECKPOINT_SECONDS")
    # a job ends `timed_out` after this much training (its spec's limits.max_seconds
    # may lower it),
    max_job_seconds: float = Field(6 * 3600.0, validation_alias="SWEEPLAB_MAX_JOB_SECONDS")
    # no mini-batch for this long: the job is hung and its worker process exits,
    hung_seconds: float = Field(600.0, validation_alias="SWEEPLAB_HUNG_SECONDS")
    # how long the last write of a run (final status, release) waits for the database.
    final_write_seconds: float = Field(300.0, validation_alias="SWEEPLAB_FINAL_WRITE_SECONDS")
    # Bearer tokens on every /api/v1 route but health, readiness and the docs.
    # SWEEPLAB_AUTH=off is for a lone user on a laptop: everyone is a local admin.
    auth: bool = Field(True, validation_alias="SWEEPLAB_AUTH")
    # an API process trusts a token it checked this long ago (a revocation made through
    # another process takes effect within it); 0: check every request
    auth_cache_seconds: float = Field(5.0, ge=0, validation_alias="SWEEPLAB_AUTH_CACHE_SECONDS")
    # an Idempotency-Key of a POST names its resource this long (then it may name another)
    idempotency_seconds: float = Field(
        24 * 3600.0, gt=0, validation_alias="SWEEPLAB_IDEMPOTENCY_SECONDS"
    )

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if not (data.get("DATABASE_URL") or data.get("database_url")):
            home = Path(data.get("SWEEPLAB_HOME") or data.get("home") or Path.cwd())
            data["DATABASE_URL"] = f"sqlite:///{home / 'var' / 'sweeplab.db'}"
        if not (data.get("MLFLOW_UI_URL") or data.get("mlflow_ui_url")):
            tracking = data.get("MLFLOW_TRACKING_URI", data.get("mlflow_tracking_uri", ...))
            data["MLFLOW_UI_URL"] = (
                cls.model_fields["mlflow_tracking_uri"].default if tracking is ... else tracking
            )
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, Environ(settings_cls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``)."""
        if environ is None:
            return cls()  # type: ignore[call-arg]  # fields come from the sources
        return cls(_build_sources=((Environ(cls, environ),), {}))  # type: ignore[call-arg]

    def replace(self, **changes: object) -> Settings:
        """Return a copy with ``changes`` applied (handy in tests)."""
        return self.model_copy(update=changes)
