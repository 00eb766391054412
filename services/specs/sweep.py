"""The sweep spec: search-space parameters, objective, early stopping; check_sweep, apply_params."""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.config import Limits
from services.specs.base import (
    OBJECTIVE_METRICS,
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
from services.specs.job import (
    JobCreate,
    has_validation,
    trainer_normalize,
    validate_job,
)
from services.trainer.data import CLASSIFICATION, dataset_task


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

    @model_validator(mode="before")
    @classmethod
    def _printable(cls, data: Any) -> Any:
        return reject_control_characters(data)

    @field_validator("parameters")
    @classmethod
    def _paths(cls, value: dict[str, ParameterSpec]) -> dict[str, ParameterSpec]:
        for path in value:
            if not path or any(not part for part in path.split(".")):
                raise error_at(path, f"'{path}' is not a dotted path such as 'a.b.0.c'")
        return value

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> SweepCreate:
        limits = limits_in(info)
        if self.max_concurrency > limits.max_concurrency:
            raise error_at(
                "max_concurrency", f"max_concurrency must be at most {limits.max_concurrency}"
            )
        if self.method == "grid":
            for path, param in self.parameters.items():
                if param.values is None or param.distribution not in (None, "choice"):
                    raise error_at(f"parameters.{path}", f"grid parameter '{path}' needs 'values'")
            size = math.prod(len(p.values or ()) for p in self.parameters.values())
            if self.n_trials is not None and self.n_trials != size:
                raise error_at("n_trials", f"a grid has {size} trials; leave n_trials out")
            if size > limits.max_trials:
                raise error_at(
                    "parameters", f"the grid has {size} trials, at most {limits.max_trials}"
                )
        elif self.n_trials is None:
            raise error_at("n_trials", f"method '{self.method}' needs n_trials")
        elif self.n_trials > limits.max_trials:
            raise error_at("n_trials", f"n_trials must be at most {limits.max_trials}")
        return self

    def total_trials(self) -> int:
        if self.method == "grid":
            return math.prod(len(p.values or ()) for p in self.parameters.values())
        assert self.n_trials is not None
        return self.n_trials


def validate_sweep(data: Any, limits: Limits | None = None) -> SweepCreate:
    """Validate a sweep spec, including every parameter value applied to the base."""
    limits = limits or Limits()
    if not isinstance(data, dict):
        raise SpecValidationError("a sweep spec is a JSON object", [NOT_OBJECT])
    try:
        sweep = SweepCreate.model_validate(data, context={"limits": limits})
    except ValidationError as err:
        raise SpecValidationError("invalid sweep spec", pydantic_details(err)) from err
    return check_sweep(sweep, limits)


def check_sweep(sweep: SweepCreate, limits: Limits | None = None) -> SweepCreate:
    """Check a validated sweep: the base and every parameter value applied to it."""
    limits = limits or Limits()
    base = sweep.base.model_dump(exclude_unset=True)
    normalized = trainer_normalize(base, prefix="base")
    base_problem = _objective_problem(sweep.objective.metric, normalized)
    # the base has the problem and no swept field can change it: no trial could be ranked
    if base_problem and not set(base_problem[0]) & set(sweep.parameters):
        regression = (
            dataset_task(normalized["dataset"]["name"], normalized["dataset"])[0] != CLASSIFICATION
        )
        other = (
            "val_loss or train_loss"
            if base_problem[0] is _DECIDE_TASK
            else ("train_loss" if regression else "train_loss or train_accuracy")
        )
        raise SpecValidationError(
            "invalid sweep spec",
            [
                {
                    "loc": "objective.metric",
                    "msg": f"{base_problem[1].replace('this trial', 'the base')}; "
                    f"use {other}, or change base.dataset",
                }
            ],
        )
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


#: Fields of a job spec that decide whether it has validation rows / its task.
_DECIDE_VALIDATION = (
    "dataset",
    "dataset.validation_split",
    "dataset.name",
    "dataset.n_samples",
    "dataset.centers",
    "dataset.arms",
    "dataset.y",
    "dataset.task",
)
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
