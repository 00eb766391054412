"""How a run paces itself and when it stops: its limits (checkpoint period, wall-clock
limit, hung threshold, write patience) and the process-wide shutdown flag that
SIGTERM sets (``worker/shutdown.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.config import Settings

# Defaults of RunLimits (the settings' defaults are the same; tests build RunLimits directly).
CHECKPOINT_SECONDS = 60.0  # SWEEPLAB_CHECKPOINT_SECONDS


MAX_JOB_SECONDS = 6 * 3600.0  # SWEEPLAB_MAX_JOB_SECONDS


HUNG_SECONDS = 600.0  # SWEEPLAB_HUNG_SECONDS


FINAL_WRITE_SECONDS = 300.0  # SWEEPLAB_FINAL_WRITE_SECONDS


# How long a job stopped by a warm shutdown tries to write its release: within
# the worker's stop_grace_period (docker-compose.yml) and `make down`'s wait.
SHUTDOWN_WRITE_SECONDS = 20.0


# A write that the database refused for being away is tried again after this,
# then twice as late each time, up to FLUSH_BACKOFF_MAX.
FLUSH_BACKOFF, FLUSH_BACKOFF_MAX = 0.5, 15.0


# A write that fails this many times in a row while the database answers the lease
# renewal right after is refused for its own sake (its data), not for an outage:
# it fails the job like any other error.
WRITE_REFUSALS = 3


class Flag:
    """A flag that a signal handler may set or read (a plain attribute: no lock to
    deadlock on, and cheap enough to read at every mini-batch)."""

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        self.requested = True

    def clear(self) -> None:
        self.requested = False

    def is_set(self) -> bool:
        return self.requested


#: Set on a warm shutdown (SIGTERM, see worker/shutdown.py): the job running in this
#: process stops at its next mini-batch and is released; none is started after it.
SHUTDOWN = Flag()


#: Set while a job trains in this process (worker/shutdown.py: a SIGTERM then stops it).
TRAINING = Flag()


@dataclass(frozen=True)
class RunLimits:
    """How a run paces its checkpoints and when it gives up: from the settings
    (``SWEEPLAB_CHECKPOINT_SECONDS``, ``SWEEPLAB_MAX_JOB_SECONDS``,
    ``SWEEPLAB_HUNG_SECONDS``, ``SWEEPLAB_FINAL_WRITE_SECONDS``)."""

    # a checkpoint at the first epoch boundary after this much training since the last
    checkpoint_seconds: float = CHECKPOINT_SECONDS
    # training time (all attempts) after which a job ends `timed_out`; a job's spec
    # may lower it (hyperparameters.max_seconds)
    max_job_seconds: float = MAX_JOB_SECONDS
    # no mini-batch for this long: the job is hung and its worker process exits
    hung_seconds: float = HUNG_SECONDS
    # how long the last write (final status, release) waits for the database
    final_write_seconds: float = FINAL_WRITE_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> RunLimits:
        return cls(
            checkpoint_seconds=settings.checkpoint_seconds,
            max_job_seconds=settings.max_job_seconds,
            hung_seconds=settings.hung_seconds,
            final_write_seconds=settings.final_write_seconds,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RunLimits:
        return cls.from_settings(Settings.from_env(environ))

    def for_job(self, spec: Mapping[str, Any]) -> float:
        """The job's wall-clock limit: the default, or lower if its spec asks."""
        asked = (spec.get("limits") or {}).get("max_seconds")
        if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > 0:
            return min(float(asked), self.max_job_seconds)
        return self.max_job_seconds
