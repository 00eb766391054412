"""Request models for jobs and sweeps, with the limits; the OpenAPI schemas come from here.

Pydantic checks shape, types and limits; the trainer's ``parse_spec`` then
checks meaning (and fills defaults), so both front doors accept exactly the
trainer's format. Both kinds of failure become :class:`SpecValidationError`,
whose ``details`` name the field by dotted path.
"""

from __future__ import annotations

import copy
import itertools
import math
from contextvars import ContextVar
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from services.config import Limits
from services.trainer import SpecError, parse_spec
from services.trainer.data import (
    CLASSIFICATION,
    dataset_task,
    validation_rows,
)

# The trainer's names (a unit test checks these against its tables).
ACTIVATIONS = Literal["relu", "leaky_relu", "sigmoid", "tanh", "linear"]
OUTPUT_ACTIVATIONS = Literal["softmax", "sigmoid", "linear", "tanh", "relu"]
DATASET_NAMES = Literal[
    "xor", "spirals", "moons", "circles", "blobs", "sine",
    "digits", "iris", "wine", "breast_cancer", "diabetes", "arrays",
]  # fmt: skip
INITIALIZER_NAMES = Literal["he", "xavier", "normal"]
LOSS_NAMES = Literal["cross_entropy", "binary_cross_entropy", "mse"]
OPTIMIZER_NAMES = Literal["sgd", "rmsprop", "adam", "adamw"]
SCHEDULE_NAMES = Literal["constant", "step", "exponential", "cosine"]
OBJECTIVE_METRICS = Literal["val_loss", "train_loss", "val_accuracy", "train_accuracy"]

# Default sizes of the synthetic datasets (the trainer's), for the data-size checks.
_DEFAULT_SAMPLES = {
    "xor": 400, "spirals": 300, "moons": 400, "circles": 400, "blobs": 400, "sine": 400,
}  # fmt: skip

# (n_features, n_outputs) of the bundled datasets, for the parameter-count limit.
_DATASET_SHAPES = {
    "digits": (64, 10), "iris": (4, 3), "wine": (13, 3), "breast_cancer": (30, 1),
    "diabetes": (10, 1), "sine": (1, 1), "xor": (2, 1), "moons": (2, 1), "circles": (2, 1),
}  # fmt: skip


class SpecValidationError(ValueError):
    """A spec that failed validation; ``details`` is ``[{"loc": "a.b.0", "msg": ...}]``."""

    def __init__(self, message: str, details: list[dict[str, str]]):
        super().__init__(message)
        self.details = details


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


#: The limits in force where a model is validated without a ``limits`` context (the
#: API validates request bodies inside its framework, which passes no context).
LIMITS_IN_FORCE: ContextVar[Limits | None] = ContextVar("sweeplab_limits", default=None)


def _limits(info: ValidationInfo) -> Limits:
    return (info.context or {}).get("limits") or LIMITS_IN_FORCE.get() or Limits()


def _error_at(loc: str, message: str) -> PydanticCustomError:
    """A model-level error that names the field ``loc`` (relative to the model)."""
    return PydanticCustomError("value_error", message, {"loc": loc})


SEED_MAX = 2**31 - 1  # stored in an INTEGER column on every backend


# --- the job spec (the trainer's format) ------------------------------------


class DatasetSpec(Strict):
    """Common fields, plus each dataset's own options (the trainer checks which apply)."""

    name: DATASET_NAMES
    validation_split: Annotated[float, Field(ge=0, lt=1)] = 0.2
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)] = 0
    standardize: bool = True
    standardize_targets: bool = True
    n_samples: Annotated[int, Field(ge=4)] | None = None
    noise: Annotated[float, Field(ge=0, le=100)] | None = None
    factor: Annotated[float, Field(gt=0, lt=1)] | None = None
    arms: Annotated[int, Field(ge=2, le=100)] | None = None
    centers: Annotated[int, Field(ge=2, le=1000)] | None = None
    n_features: Annotated[int, Field(ge=1, le=65_536)] | None = None
    X: list[list[float]] | list[float] | None = None
    y: list[int | float | str | bool | list[float]] | None = None
    task: Literal["classification", "regression"] | None = None

    @field_validator("n_samples")
    @classmethod
    def _max_samples(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value > _limits(info).max_samples:
            raise ValueError(f"n_samples must be at most {_limits(info).max_samples}")
        return value

    @field_validator("X")
    @classmethod
    def _max_rows(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        if value is not None and len(value) > _limits(info).max_samples:
            raise ValueError(f"at most {_limits(info).max_samples} samples")
        return value

    @model_validator(mode="after")
    def _check_size(self, info: ValidationInfo) -> DatasetSpec:
        # n_samples x n_features floats are allocated at once: a worker must not run out
        # of memory (it would die, and the job would be retried on the next one).
        n_samples = self.n_samples or _DEFAULT_SAMPLES.get(self.name, 0)
        values, limit = n_samples * (self.n_features or 2), _limits(info).max_dataset_values
        if self.name == "blobs" and values > limit:
            raise _error_at(
                "n_features" if self.n_features else "n_samples",
                f"n_samples x n_features is {values}, at most {limit}",
            )
        if n_samples and n_samples * (1 - self.validation_split) < 2:
            raise _error_at(
                "validation_split",
                f"leaves fewer than 2 of {n_samples} samples for training",
            )
        return self


class LayerSpec(Strict):
    units: Annotated[int, Field(ge=1)]
    activation: ACTIVATIONS = "relu"

    @field_validator("units")
    @classmethod
    def _max_units(cls, value: int, info: ValidationInfo) -> int:
        if value > _limits(info).max_units:
            raise ValueError(f"units must be at most {_limits(info).max_units}")
        return value


class ArchitectureSpec(Strict):
    layers: list[LayerSpec]
    output_activation: OUTPUT_ACTIVATIONS | None = None
    initializer: INITIALIZER_NAMES = "he"
    init_std: Annotated[float, Field(gt=0, le=100)] = 0.01

    @field_validator("layers")
    @classmethod
    def _max_layers(cls, value: list[LayerSpec], info: ValidationInfo) -> list[LayerSpec]:
        if len(value) > _limits(info).max_layers:
            raise ValueError(f"at most {_limits(info).max_layers} layers")
        return value


class LRScheduleSpec(Strict):
    name: SCHEDULE_NAMES = "constant"
    warmup_epochs: Annotated[int, Field(ge=0)] = 0
    step_size: Annotated[int, Field(ge=1)] | None = None
    gamma: Annotated[float, Field(gt=0, le=1)] | None = None
    t_max: Annotated[int, Field(ge=1)] | None = None
    min_lr: Annotated[float, Field(ge=0)] | None = None


class EarlyStoppingSpec(Strict):
    metric: OBJECTIVE_METRICS = "val_loss"
    patience: Annotated[int, Field(ge=1)] = 5
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    restore_best: bool = True


class HyperparametersSpec(Strict):
    learning_rate: Annotated[float, Field(gt=0, le=1e6)]
    optimizer: OPTIMIZER_NAMES = "sgd"
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False
    dampening: Annotated[float, Field(ge=0, lt=1)] = 0.0
    alpha: Annotated[float, Field(ge=0, lt=1)] = 0.99
    eps: Annotated[float, Field(gt=0, le=1)] = 1e-8
    betas: Annotated[
        list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)
    ] = [
        0.9,
        0.999,
    ]
    weight_decay: Annotated[float, Field(ge=0)] | None = None
    batch_size: Annotated[int, Field(ge=1)] | None = 32
    epochs: Annotated[int, Field(ge=1)] = 20
    loss: LOSS_NAMES | None = None
    lr_schedule: LRScheduleSpec | None = None
    l2: Annotated[float, Field(ge=0, le=1e3)] = 0.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    gradient_clip_norm: Annotated[float, Field(gt=0)] | None = None
    early_stopping: EarlyStoppingSpec | None = None
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)] = 0
    dtype: Literal["float32", "float64"] = "float32"
    train_metrics: Literal["after_epoch", "running"] = "after_epoch"

    @field_validator("epochs")
    @classmethod
    def _max_epochs(cls, value: int, info: ValidationInfo) -> int:
        if value > _limits(info).max_epochs:
            raise ValueError(f"epochs must be at most {_limits(info).max_epochs}")
        return value


class JobCreate(Strict):
    """A job spec: the trainer's format (see the trainer's ``parse_spec``)."""

    name: Annotated[str, Field(max_length=200)] | None = None
    dataset: DatasetSpec
    architecture: ArchitectureSpec
    hyperparameters: HyperparametersSpec

    @model_validator(mode="after")
    def _check_params(self, info: ValidationInfo) -> JobCreate:
        limit = _limits(info).max_params
        if (n := count_parameters(self)) > limit:
            raise PydanticCustomError(
                "too_many_parameters",
                "the network has {n} parameters, at most {limit}",
                {"n": n, "limit": limit, "loc": "architecture.layers"},
            )
        return self


def count_parameters(spec: JobCreate) -> int:
    """Weights and biases of the network (the output width estimated where unknown)."""
    ds = spec.dataset
    n_in, n_out = _DATASET_SHAPES.get(ds.name, (ds.n_features or 2, ds.centers or ds.arms or 3))
    if ds.name == "arrays" and ds.X:
        first = ds.X[0]
        n_in = len(first) if isinstance(first, list) else 1
        n_out = min(len({repr(v) for v in ds.y or []}), 1000) if ds.task != "regression" else 1
    widths = [n_in, *(layer.units for layer in spec.architecture.layers), n_out]
    return sum((a + 1) * b for a, b in itertools.pairwise(widths))


# --- the sweep spec -----------------------------------------------------------


class ParameterSpec(Strict):
    """``{"values": [...]}`` or ``{"distribution": ..., "min": ..., "max": ...}``."""

    values: Annotated[list[Any], Field(min_length=1)] | None = None
    distribution: Literal["uniform", "log_uniform", "int_uniform", "choice"] | None = None
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> ParameterSpec:
        if self.distribution in (None, "choice"):
            if self.values is None:
                raise ValueError("give 'values' (or a distribution with min and max)")
            if self.min is not None or self.max is not None:
                raise ValueError("'min'/'max' go with uniform, log_uniform or int_uniform")
            return self
        if self.values is not None:
            raise ValueError(f"'{self.distribution}' takes min and max, not values")
        if self.min is None or self.max is None:
            raise ValueError(f"'{self.distribution}' needs min and max")
        if self.min > self.max or (self.min == self.max and self.distribution != "int_uniform"):
            raise ValueError("min must be below max")
        if self.distribution == "log_uniform" and self.min <= 0:
            raise ValueError("log_uniform needs min > 0")
        if self.distribution == "int_uniform" and not (
            float(self.min).is_integer() and float(self.max).is_integer()
        ):
            raise ValueError("int_uniform needs integer min and max")
        return self

    def probe_values(self) -> list[Any]:
        """Values that together exercise the whole range (for validation)."""
        if self.values is not None:
            return list(self.values)
        assert self.min is not None and self.max is not None
        if self.distribution == "int_uniform":
            return [int(self.min), int(self.max)]
        return [self.min, self.max]


class ObjectiveSpec(Strict):
    metric: OBJECTIVE_METRICS = "val_loss"
    goal: Literal["minimize", "maximize", "min", "max"] | None = None

    @model_validator(mode="after")
    def _default_goal(self) -> ObjectiveSpec:
        goal = self.goal or ("maximize" if self.metric.endswith("accuracy") else "minimize")
        self.goal = {"min": "minimize", "max": "maximize"}.get(goal, goal)  # type: ignore[assignment]
        return self


class EarlyStoppingPolicy(Strict):
    """Median stopping or ASHA, at epoch boundaries, against the sweep's other trials."""

    policy: Literal["median", "asha"]
    min_epochs: Annotated[int, Field(ge=1)] = 1
    min_peers: Annotated[int, Field(ge=1)] = 2
    reduction_factor: Annotated[int, Field(ge=2)] = 3


class SweepCreate(Strict):
    name: Annotated[str, Field(max_length=200)] | None = None
    experiment: Annotated[str, Field(min_length=1, max_length=200)] = "sweeplab"
    base: JobCreate
    method: Literal["grid", "random", "tpe"]
    parameters: Annotated[dict[str, ParameterSpec], Field(min_length=1)]
    n_trials: Annotated[int, Field(ge=1)] | None = None
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    max_concurrency: Annotated[int, Field(ge=1)] = 2
    early_stopping: EarlyStoppingPolicy | None = None
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)] = 0
    n_startup_trials: Annotated[int, Field(ge=0, le=100_000)] | None = None

    @field_validator("parameters")
    @classmethod
    def _paths(cls, value: dict[str, ParameterSpec]) -> dict[str, ParameterSpec]:
        for path in value:
            if not path or any(not part for part in path.split(".")):
                raise _error_at(path, f"'{path}' is not a dotted path such as 'a.b.0.c'")
        return value

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> SweepCreate:
        limits = _limits(info)
        if self.max_concurrency > limits.max_concurrency:
            raise _error_at(
                "max_concurrency", f"max_concurrency must be at most {limits.max_concurrency}"
            )
        if self.method == "grid":
            for path, param in self.parameters.items():
                if param.values is None or param.distribution not in (None, "choice"):
                    raise _error_at(f"parameters.{path}", f"grid parameter '{path}' needs 'values'")
            size = math.prod(len(p.values or ()) for p in self.parameters.values())
            if self.n_trials is not None and self.n_trials != size:
                raise _error_at("n_trials", f"a grid has {size} trials; leave n_trials out")
            if size > limits.max_trials:
                raise _error_at(
                    "parameters", f"the grid has {size} trials, at most {limits.max_trials}"
                )
        elif self.n_trials is None:
            raise _error_at("n_trials", f"method '{self.method}' needs n_trials")
        elif self.n_trials > limits.max_trials:
            raise _error_at("n_trials", f"n_trials must be at most {limits.max_trials}")
        return self

    def total_trials(self) -> int:
        if self.method == "grid":
            return math.prod(len(p.values or ()) for p in self.parameters.values())
        assert self.n_trials is not None
        return self.n_trials


# --- responses (what the API sends; extra fields are refused, so none goes undeclared) -------


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


JOB_STATUS = Literal["queued", "running", "succeeded", "failed", "diverged", "cancelled", "pruned"]


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


class JobPage(Public):
    items: list[JobPublic]
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
    trials: str
    cancel: str


class SweepPublic(Public):
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
    best_trial: LeaderboardRow | None
    leaderboard: list[LeaderboardRow] = Field(description="empty in lists of sweeps")
    spec: dict[str, Any]
    timings: SweepTimings
    links: SweepLinks
    mlflow: MlflowLinks | None = Field(description="null when mirroring is off")


class SweepPage(Public):
    items: list[SweepPublic]
    next_cursor: str | None


# --- validation entry points ------------------------------------------------------


_NOT_OBJECT = {"loc": "", "msg": "expected a JSON object"}


def _loc(parts: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in parts)


def _pydantic_details(err: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    details = []
    for e in err.errors(include_url=False):
        # Drop union/validator tags ("function-after[...]"), keep the field path.
        parts = [p for p in e["loc"] if not (isinstance(p, str) and "[" in p)]
        loc = _loc(parts)
        if e.get("ctx", {}).get("loc"):
            loc = f"{loc}.{e['ctx']['loc']}".strip(".")
        msg = e["msg"].removeprefix("Value error, ")
        details.append({"loc": f"{prefix}.{loc}".strip(".") if prefix else loc, "msg": msg})
    return details


def _trainer_normalize(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Run the trainer's semantic checks and return its normalized spec."""
    try:
        return parse_spec(copy.deepcopy(spec)).to_dict()
    except SpecError as err:
        loc = getattr(err, "loc", None) or ""
        full = f"{prefix}.{loc}".strip(".") if prefix else loc
        msg = str(err).removeprefix(f"{loc}: ") if loc else str(err)
        raise SpecValidationError("invalid job spec", [{"loc": full, "msg": msg}]) from err


def validate_job(data: Any, limits: Limits | None = None) -> dict[str, Any]:
    """Validate a job spec; return the normalized spec (trainer defaults filled in)."""
    if not isinstance(data, dict):
        raise SpecValidationError("a job spec is a JSON object", [_NOT_OBJECT])
    try:
        model = JobCreate.model_validate(data, context={"limits": limits or Limits()})
    except ValidationError as err:
        raise SpecValidationError("invalid job spec", _pydantic_details(err)) from err
    return normalize_job(model)


def normalize_job(model: JobCreate) -> dict[str, Any]:
    """Run the trainer's checks on a validated job spec; return its normalized spec."""
    return _trainer_normalize(model.model_dump(exclude_unset=True))


def validation_error(err: ValidationError) -> SpecValidationError:
    """The 422 for a request body that failed its model (``err.title`` names the model)."""
    kind = {"JobCreate": "job", "SweepCreate": "sweep"}.get(err.title, "request")
    return SpecValidationError(f"invalid {kind} spec", _pydantic_details(err))


def validate_sweep(data: Any, limits: Limits | None = None) -> SweepCreate:
    """Validate a sweep spec, including every parameter value applied to the base."""
    limits = limits or Limits()
    if not isinstance(data, dict):
        raise SpecValidationError("a sweep spec is a JSON object", [_NOT_OBJECT])
    try:
        sweep = SweepCreate.model_validate(data, context={"limits": limits})
    except ValidationError as err:
        raise SpecValidationError("invalid sweep spec", _pydantic_details(err)) from err
    return check_sweep(sweep, limits)


def check_sweep(sweep: SweepCreate, limits: Limits | None = None) -> SweepCreate:
    """Check a validated sweep: the base and every parameter value applied to it."""
    limits = limits or Limits()
    base = sweep.base.model_dump(exclude_unset=True)
    normalized = _trainer_normalize(base, prefix="base")
    base_problem = _objective_problem(sweep.objective.metric, normalized)
    # the base has the problem and no swept field can change it: no trial could be ranked
    if base_problem and not set(base_problem[0]) & set(sweep.parameters):
        regression = dataset_task(normalized["dataset"]["name"], normalized["dataset"])[0] \
            != CLASSIFICATION  # fmt: skip
        other = "val_loss or train_loss" if base_problem[0] is _DECIDE_TASK else (
            "train_loss" if regression else "train_loss or train_accuracy")  # fmt: skip
        raise SpecValidationError(
            "invalid sweep spec",
            [{"loc": "objective.metric",
              "msg": f"{base_problem[1].replace('this trial', 'the base')}; "
                     f"use {other}, or change base.dataset"}],
        )  # fmt: skip
    for path, param in sweep.parameters.items():
        for i, value in enumerate(param.probe_values()):
            where = f"parameters.{path}" + (f".values.{i}" if param.values is not None else "")
            try:
                spec = apply_params(base, {path: value})
            except (KeyError, IndexError, TypeError) as err:
                raise SpecValidationError(
                    "invalid sweep parameter", [{"loc": f"parameters.{path}", "msg": str(err)}]
                ) from err
            try:
                normalized = validate_job(spec, limits)
            except SpecValidationError as err:
                msgs = "; ".join(f"{d['loc']}: {d['msg']}" for d in err.details)
                raise SpecValidationError(
                    "a sweep parameter gives an invalid job spec",
                    [{"loc": where, "msg": f"value {value!r} gives an invalid spec ({msgs})"}],
                ) from err
            problem = _objective_problem(sweep.objective.metric, normalized)
            # blamed on this value if the base is fine, or if this path decides it
            if problem and (base_problem is None or path in problem[0]):
                raise SpecValidationError(
                    "a sweep parameter gives a trial the objective cannot rank",
                    [{"loc": where, "msg": f"value {value!r}: {problem[1]}"}],
                )
    return sweep


def has_validation(spec: dict[str, Any]) -> bool:
    """Whether a job of normalized ``spec`` has validation rows, as the trainer
    splits its data (exact: from inline labels, or a named set's options)."""
    ds = spec.get("dataset") or {}
    rows = validation_rows(ds.get("name", ""), ds, ds.get("validation_split", 0.2))
    return rows is None or rows > 0


#: Fields of a job spec that decide whether it has validation rows / its task.
_DECIDE_VALIDATION = ("dataset", "dataset.validation_split", "dataset.name", "dataset.n_samples",
                      "dataset.centers", "dataset.arms", "dataset.y", "dataset.task")  # fmt: skip
_DECIDE_TASK = ("dataset", "dataset.name", "dataset.y", "dataset.task")


def _objective_problem(metric: str, spec: dict[str, Any]) -> tuple[tuple[str, ...], str] | None:
    """Why a trial of normalized ``spec`` would have no ``metric`` to be ranked by:
    ``(the spec paths that decide it, the message)``, or None."""
    ds = spec["dataset"]
    if metric.endswith("accuracy") and dataset_task(ds["name"], ds)[0] != CLASSIFICATION:
        return _DECIDE_TASK, f"{metric} needs a classification task; this trial is a regression"
    if metric.startswith("val_") and not has_validation(spec):
        return _DECIDE_VALIDATION, (
            f"{metric} needs a validation set; this trial has no validation rows"
        )
    return None


def apply_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``base`` with each dotted path (list indices too) set.

    Missing object keys are created; a list index must exist.
    """
    spec = copy.deepcopy(base)
    for path, value in params.items():
        parts = path.split(".")
        node: Any = spec
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise IndexError(f"'{'.'.join(parts[: depth + 1])}': no such list index")
                key: Any = int(part)
            elif isinstance(node, dict):
                key = part
            else:
                raise TypeError(f"'{'.'.join(parts[:depth])}' is not an object or a list")
            if last:
                node[key] = copy.deepcopy(value)
            else:
                if isinstance(node, dict) and node.get(key) is None:
                    node[key] = {}
                node = node[key]
    return spec
