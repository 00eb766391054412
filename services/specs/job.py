"""The job spec (the trainer's format): its models, the limits they check, and validate_job."""

from __future__ import annotations

import copy
import itertools
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from services import budgets
from services.config import Limits
from services.specs.base import (
    ACTIVATIONS,
    DATASET_NAMES,
    INITIALIZER_NAMES,
    LIMITS_IN_FORCE,
    LOSS_NAMES,
    OBJECTIVE_METRICS,
    OPTIMIZER_NAMES,
    OUTPUT_ACTIVATIONS,
    SCHEDULE_NAMES,
    SEED_MAX,
    Strict,
    limits_in,
    reject_control_characters,
)
from services.specs.errors import (
    NOT_OBJECT,
    SpecValidationError,
    error_at,
    pydantic_details,
)
from services.trainer import SpecError, parse_spec
from services.trainer.data import validation_rows

# Default sizes of the synthetic datasets (the trainer's), for the data-size checks.
_DEFAULT_SAMPLES = {
    "xor": 400,
    "spirals": 300,
    "moons": 400,
    "circles": 400,
    "blobs": 400,
    "sine": 400,
}

# (n_features, n_outputs) of the bundled datasets, for the parameter-count limit.
_DATASET_SHAPES = {
    "digits": (64, 10),
    "iris": (4, 3),
    "wine": (13, 3),
    "breast_cancer": (30, 1),
    "diabetes": (10, 1),
    "sine": (1, 1),
    "xor": (2, 1),
    "moons": (2, 1),
    "circles": (2, 1),
}


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
    # "uploaded": the id of a stored dataset (POST /datasets); the rest are its facts,
    # filled in from the stored dataset at submission (a value given here is replaced)
    # (left out of the OpenAPI document: a request has no need of them)
    id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    sha256: SkipJsonSchema[Annotated[str, Field(max_length=64)] | None] = None
    n_rows: SkipJsonSchema[Annotated[int, Field(ge=2)] | None] = None
    class_counts: SkipJsonSchema[list[Annotated[int, Field(ge=1)]] | None] = None
    n_targets: SkipJsonSchema[Annotated[int, Field(ge=1)] | None] = None

    @field_validator("n_samples")
    @classmethod
    def _max_samples(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value > limits_in(info).max_samples:
            raise ValueError(f"n_samples must be at most {limits_in(info).max_samples}")
        return value

    @field_validator("X")
    @classmethod
    def _max_rows(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        if value is not None and len(value) > limits_in(info).max_samples:
            raise ValueError(f"at most {limits_in(info).max_samples} samples")
        return value

    @model_validator(mode="after")
    def _uploaded_id(self) -> DatasetSpec:
        if self.name == "uploaded" and self.id is None:
            raise error_at("id", "is required for 'uploaded': the id POST /datasets answered")
        return self

    @model_validator(mode="after")
    def _check_size(self, info: ValidationInfo) -> DatasetSpec:
        # n_samples x n_features floats are allocated at once: a worker must not run out
        # of memory (it would die, and the job would be retried on the next one).
        n_samples = self.n_samples or _DEFAULT_SAMPLES.get(self.name, 0)
        values, limit = n_samples * (self.n_features or 2), limits_in(info).max_dataset_values
        if self.name == "blobs" and values > limit:
            raise error_at(
                "n_features" if self.n_features else "n_samples",
                f"n_samples x n_features is {values}, at most {limit}",
            )
        if n_samples and n_samples * (1 - self.validation_split) < 2:
            raise error_at(
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
        if value > limits_in(info).max_units:
            raise ValueError(f"units must be at most {limits_in(info).max_units}")
        return value


class ArchitectureSpec(Strict):
    layers: list[LayerSpec]
    output_activation: OUTPUT_ACTIVATIONS | None = None
    initializer: INITIALIZER_NAMES = "he"
    init_std: Annotated[float, Field(gt=0, le=100)] = 0.01

    @field_validator("layers")
    @classmethod
    def _max_layers(cls, value: list[LayerSpec], info: ValidationInfo) -> list[LayerSpec]:
        if len(value) > limits_in(info).max_layers:
            raise ValueError(f"at most {limits_in(info).max_layers} layers")
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
        if value > limits_in(info).max_epochs:
            raise ValueError(f"epochs must be at most {limits_in(info).max_epochs}")
        return value


class JobLimits(Strict):
    """What a run may take besides its budgets: ``max_seconds`` of training (across
    attempts), at most the server's ``SWEEPLAB_MAX_JOB_SECONDS``; the job then ends
    ``timed_out`` with its best weights."""

    max_seconds: Annotated[float, Field(gt=0)] | None = None


class JobCreate(Strict):
    """A job spec: the trainer's format (see the trainer's ``parse_spec``), and the
    service's own ``limits`` (not the trainer's: taken off before it sees the spec)."""

    name: Annotated[str, Field(max_length=200)] | None = None
    dataset: DatasetSpec
    architecture: ArchitectureSpec
    hyperparameters: HyperparametersSpec
    limits: JobLimits | None = None
    # the MLflow experiment of a job's run (a sweep's trials go to the sweep's)
    experiment: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    # false: train even if an identical job of yours already succeeded (else it is reused)
    reuse: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _printable(cls, data: Any) -> Any:
        return reject_control_characters(data)

    @model_validator(mode="after")
    def _check_params(self, info: ValidationInfo) -> JobCreate:
        limit = limits_in(info).max_params
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
    if ds.name == "uploaded" and ds.n_rows is not None:
        n_out = len(ds.class_counts) if ds.class_counts else (ds.n_targets or 1)
    if ds.name == "arrays" and ds.X:
        first = ds.X[0]
        n_in = len(first) if isinstance(first, list) else 1
        n_out = min(len({repr(v) for v in ds.y or []}), 1000) if ds.task != "regression" else 1
    widths = [n_in, *(layer.units for layer in spec.architecture.layers), n_out]
    return sum((a + 1) * b for a, b in itertools.pairwise(widths))


def trainer_normalize(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
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
        raise SpecValidationError("a job spec is a JSON object", [NOT_OBJECT])
    try:
        model = JobCreate.model_validate(data, context={"limits": limits or Limits()})
    except ValidationError as err:
        raise SpecValidationError("invalid job spec", pydantic_details(err)) from err
    return normalize_job(model, limits)


def normalize_job(model: JobCreate, limits: Limits | None = None) -> dict[str, Any]:
    """Run the trainer's checks and the budgets on a validated job spec; return its
    normalized spec. ``limits``: by default the request's (``LIMITS_IN_FORCE``)."""
    spec = model.model_dump(exclude_unset=True)
    service = {key: spec.pop(key) for key in SERVICE_FIELDS if spec.get(key) is not None}
    normalized = trainer_normalize(spec)
    check_budgets(normalized, limits or LIMITS_IN_FORCE.get() or Limits())
    normalized.update(service)
    return normalized


#: fields of a job spec that are the service's, not the trainer's (taken off before it
#: sees the spec): run limits, the MLflow experiment, whether an identical run is reused
SERVICE_FIELDS = ("limits", "experiment", "reuse")


def trainer_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The part of a stored job spec that is the trainer's (without the service's fields)."""
    return {key: value for key, value in spec.items() if key not in SERVICE_FIELDS}


def check_budgets(spec: dict[str, Any], limits: Limits) -> None:
    """A 422 if the normalized ``spec``'s estimated memory or FLOPs are over ``limits``."""
    details = budgets.problems(
        budgets.estimate(spec), limits.max_job_memory_bytes, limits.max_job_flops
    )
    if details:
        raise SpecValidationError("the job is over its budget", details)


def has_validation(spec: dict[str, Any]) -> bool:
    """Whether a job of normalized ``spec`` has validation rows, as the trainer
    splits its data (exact: from inline labels, or a named set's options)."""
    ds = spec.get("dataset") or {}
    rows = validation_rows(ds.get("name", ""), ds, ds.get("validation_split", 0.2))
    return rows is None or rows > 0
