"""The API's response models: what it sends (extra fields are refused, so none goes undeclared)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: How many rows of its leaderboard a sweep shows (GET /sweeps/<id>).
LEADERBOARD_TOP = 10


class Public(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Public):
    loc: str = Field(description="the field, as a dotted path (hyperparameters.learning_rate)")
    msg: str


class ErrorBody(Public):
    code: str = Field(description="validation_error, not_found, queue_unavailable, ...")
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(Public):
    error: ErrorBody


JOB_STATUS = Literal[
    "queued",
    "running",
    "succeeded",
    "failed",
    "diverged",
    "cancelled",
    "pruned",
    "timed_out",
    "skipped",
]


class Progress(Public):
    epoch: int
    epochs: int | None
    fraction: float | None


class JobTimings(Public):
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    queued_seconds: float | None
    run_seconds: float | None
    train_seconds: float | None


class JobLinks(Public):
    self: str
    metrics: str
    cancel: str
    sweep: str | None = None


class MlflowLinks(Public):
    """Ids and UI links of the MLflow run; all null (mirrored false) until the first mirror."""

    experiment_id: str | None
    run_id: str | None
    run_url: str | None
    experiment_url: str | None
    compare_url: str | None
    mirrored: bool


class JobPublic(Public):
    id: str
    name: str | None
    status: JOB_STATUS
    sweep_id: str | None
    trial_index: int | None
    params: dict[str, Any] | None = Field(description="the swept values, by dotted path")
    spec: dict[str, Any] = Field(description="the normalized job spec (JobCreate)")
    progress: Progress
    latest_metrics: dict[str, Any] | None
    best_metrics: dict[str, Any] | None
    best_epoch: int | None
    objective: float | None
    result: dict[str, Any] | None
    diagnosis: list[Any] | None
    error: str | None
    prune_reason: str | None
    cancel_requested: bool
    timings: JobTimings
    attempts: int
    worker: str | None
    links: JobLinks
    mlflow: MlflowLinks | None = Field(description="null when mirroring is off")
    reused_from: str | None = Field(
        None,
        description="the succeeded job whose results, metrics and weights this job copied "
        "instead of training (an identical spec, seed, trainer and numpy); null if it trained",
    )


class JobSummary(Public):
    """A job in a list: what it is and how it does, without its spec, metrics or result
    (``links.self`` shows them)."""

    id: str
    name: str | None
    status: JOB_STATUS
    sweep_id: str | None
    trial_index: int | None
    params: dict[str, Any] | None = Field(description="the swept values, by dotted path")
    progress: Progress
    best_epoch: int | None
    objective: float | None
    error: str | None
    prune_reason: str | None
    cancel_requested: bool
    timings: JobTimings
    attempts: int
    worker: str | None
    links: JobLinks
    mlflow: MlflowLinks | None = Field(description="null when mirroring is off")


class JobPage(Public):
    items: list[JobSummary]
    next_cursor: str | None


class MetricRow(Public):
    epoch: int
    metrics: dict[str, Any]


class MetricsPublic(Public):
    # flask-openapi3 adds this content to the response: the same rows as CSV (?format=csv).
    model_config = ConfigDict(
        extra="forbid",
        openapi_extra={"content": {"text/csv": {"schema": {"type": "string"}}}},  # type: ignore[typeddict-unknown-key]
    )

    job_id: str
    epochs: list[MetricRow]


class LeaderboardRow(Public):
    rank: int | None = Field(description="null while the trial has no objective value")
    job_id: str
    trial_index: int | None
    status: JOB_STATUS
    objective: float | None
    params: dict[str, Any] | None
    best_epoch: int | None
    epochs_done: int
    prune_reason: str | None


class SweepObjective(Public):
    metric: str
    goal: str


class SweepTimings(Public):
    created_at: str | None
    finished_at: str | None


class SweepLinks(Public):
    self: str
    trials: str = Field(description="the trials, a page at a time (newest first)")
    leaderboard: str = Field(description="the whole leaderboard, a page at a time")
    cancel: str


class SweepSummary(Public):
    """A sweep in a list: counts and best trial, without its spec or leaderboard."""

    id: str
    name: str | None
    experiment: str | None
    status: Literal["running", "done", "cancelled"]
    method: str
    objective: SweepObjective
    max_concurrency: int
    n_trials: int
    n_created: int
    counts: dict[str, int] = Field(description="trials by status")
    epochs_done: int = Field(description="epochs trained, summed over the trials")
    best_trial: LeaderboardRow | None
    timings: SweepTimings
    links: SweepLinks
    mlflow: MlflowLinks | None = Field(description="null when mirroring is off")


class DivergenceCeiling(Public):
    """The lowest learning rate that diverged in one combination of the other swept
    parameters: trials at or above it, with the same other parameters, are skipped."""

    parameter: str = Field(description="the swept learning rate's path")
    learning_rate: float
    trial_id: str = Field(description="the trial that diverged at this rate")
    trial_index: int | None
    params: dict[str, Any] = Field(description="the other swept parameters' values")


class SweepRangeTest(Public):
    """The range test a sweep's learning rate takes its bounds from, and those bounds."""

    id: str
    status: str = Field(description="queued, running, succeeded or failed")
    parameter: str = Field(description="the swept learning rate's path")
    min: float | None = Field(description="the sampled lower bound: suggested_lr / 10")
    max: float | None = Field(description="the sampled upper bound: divergence_lr")
    suggested_lr: float | None
    divergence_lr: float | None
    link: str = Field(description="GET the range test (its curve, plot.png)")


class SweepPublic(SweepSummary):
    """A sweep: its size does not grow with its trials (the top of the leaderboard;
    ``links.leaderboard`` and ``links.trials`` page through the rest)."""

    leaderboard: list[LeaderboardRow] = Field(
        description=f"the top {LEADERBOARD_TOP} trials (links.leaderboard pages through all)"
    )
    range_test: SweepRangeTest | None = Field(
        None, description="a learning rate with range_test: the test, the bounds it gave"
    )
    divergence_ceiling: list[DivergenceCeiling] = Field(
        default_factory=list,
        description="per combination of the other swept parameters, the learning rate above "
        "which trials are skipped (empty: none diverged, no learning rate swept, or "
        "skip_above_divergence is false)",
    )
    spec: dict[str, Any]


class SweepPage(Public):
    items: list[SweepSummary]
    next_cursor: str | None


class LeaderboardPage(Public):
    """A page of a sweep's leaderboard: best first, trials without an objective last."""

    sweep_id: str
    items: list[LeaderboardRow]
    next_cursor: str | None
