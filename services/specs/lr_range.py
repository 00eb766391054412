"""A learning-rate range test: the request (a job spec and the sweep of rates) and the
answers (the test, its curve and reading; a list's summaries)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from services.specs.base import Strict, reject_control_characters
from services.specs.errors import error_at
from services.specs.job import JobCreate
from services.specs.public import MlflowLinks, Public

#: How many steps (mini-batches) a test may take.
MIN_STEPS, MAX_STEPS = 10, 2000
#: The rates a test may span.
MAX_RATE = 1e6

RANGE_TEST_STATUS = Literal["queued", "running", "succeeded", "failed"]


class RangeTestCreate(Strict):
    """Leslie Smith's test on a job spec: ``steps`` mini-batches at rates growing
    exponentially from ``min_lr`` to ``max_lr`` (step ``i`` trains at
    ``min_lr * (max_lr / min_lr) ** (i / (steps - 1))``), the loss smoothed by a
    bias-corrected moving average of beta ``smoothing``; the test stops when the
    smoothed loss exceeds ``diverge_factor`` times its minimum, or a loss is not finite.
    The spec's optimizer, batch size, dtype, seed, L2 and clipping are used; its
    learning rate, schedule and epochs are not."""

    spec: JobCreate = Field(description="a job spec, as POST /jobs takes it")
    min_lr: Annotated[float, Field(gt=0, lt=MAX_RATE)] = 1e-6
    max_lr: Annotated[float, Field(gt=0, le=MAX_RATE)] = 10.0
    steps: Annotated[int, Field(ge=MIN_STEPS, le=MAX_STEPS)] = 100
    smoothing: Annotated[float, Field(ge=0, lt=1, description="the moving average's beta")] = 0.98
    diverge_factor: Annotated[
        float,
        Field(gt=1, le=1000, description="stop when the smoothed loss exceeds this x its minimum"),
    ] = 4.0
    name: Annotated[str, Field(max_length=200)] | None = None
    experiment: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=200,
                description="the MLflow experiment of its run (default: the spec's, else sweeplab)",
            ),
        ]
        | None
    ) = None

    @model_validator(mode="before")
    @classmethod
    def _printable(cls, data: Any) -> Any:
        return reject_control_characters(data)

    @model_validator(mode="after")
    def _bounds(self) -> RangeTestCreate:
        if self.min_lr >= self.max_lr:
            raise error_at("max_lr", f"must be above min_lr ({self.min_lr:g})")
        return self


class CurvePoint(Public):
    step: int = Field(description="0-based mini-batch index")
    lr: float
    loss: float = Field(description="the batch's loss before its update")
    smoothed_loss: float


class RangeTestLinks(Public):
    self: str
    plot: str = Field(description="the curve as a PNG (409 until the test has succeeded)")


class RangeTestSummary(Public):
    """A range test in a list: its settings and reading, without its spec or curve."""

    id: str
    name: str | None
    status: RANGE_TEST_STATUS
    min_lr: float
    max_lr: float
    steps: int
    smoothing: float
    diverge_factor: float
    steps_taken: int | None = Field(description="steps run before the test stopped")
    suggested_lr: float | None = Field(description="the steepest descent of the smoothed loss")
    divergence_lr: float | None = Field(
        description="where the loss starts to diverge; null if it never did up to max_lr"
    )
    error: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    seconds: float | None = Field(description="how long the test trained")
    links: RangeTestLinks
    mlflow: MlflowLinks | None = Field(description="null when mirroring is off")


class RangeTestPublic(RangeTestSummary):
    spec: dict[str, Any] = Field(description="the normalized job spec")
    experiment: str | None
    min_loss_lr: float | None = Field(description="the rate at the smoothed loss's minimum")
    stopped_lr: float | None = Field(description="the rate the test stopped at; null: max_lr")
    interval: list[float] | None = Field(description="[low, high]: a range of good rates")
    curve: list[CurvePoint] | None = Field(description="one point a step, once succeeded")


class RangeTestPage(Public):
    items: list[RangeTestSummary]
    next_cursor: str | None
