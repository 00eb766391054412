"""The sweep spec: search-space parameters, objective, early stopping; check_sweep, apply_params."""

from __future__ import annotations

import copy
import itertools
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
    trainer_spec,
    validate_job,
)
from services.trainer.data import CLASSIFICATION, dataset_task

#: The largest pack a sweep may ask for (``"packing": k``).
MAX_PACK_SIZE = 64

#: The bounds a range test sweeps when a ``range_test`` parameter gives none.
RANGE_TEST_MIN, RANGE_TEST_MAX = 1e-6, 10.0


class ParameterSpec(Strict):
    """``{"values": [...]}`` or ``{"distribution": ..., "min": ..., "max": ...}``.

    ``"range_test": true`` (a ``uniform`` or ``log_uniform`` learning rate) takes the
    bounds from an LR range test of the sweep's base spec, run first: [suggested / 10,
    divergence point]. Its ``min``/``max``, if given, bound the test instead
    (default 1e-6 to 10)."""

    values: Annotated[list[Any], Field(min_length=1)] | None = None
    distribution: Literal["uniform", "log_uniform", "int_uniform", "choice"] | None = None
    min: float | None = None
    max: float | None = None
    range_test: bool = False

    @model_validator(mode="after")
    def _check(self) -> ParameterSpec:
        if self.range_test:
            if self.distribution not in ("uniform", "log_uniform"):
                raise ValueError("range_test goes with a uniform or log_uniform distribution")
            low = RANGE_TEST_MIN if self.min is None else self.min
            high = RANGE_TEST_MAX if self.max is None else self.max
            if not 0 < low < high:
                raise ValueError("a range test's min and max need 0 < min < max")
            return self
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
        if self.range_test:
            return list(self.range_test_bounds())
        assert self.min is not None and self.max is not None
        if self.distribution == "int_uniform":
            return [int(self.min), int(self.max)]
        return [self.min, self.max]

    def range_test_bounds(self) -> tuple[float, float]:
        """The rates a ``range_test`` parameter's test sweeps."""
        return (
            RANGE_TEST_MIN if self.min is None else self.min,
            RANGE_TEST_MAX if self.max is None else self.max,
        )


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
    # Skip trials whose learning rate is at or above one that diverged, other swept
    # parameters equal (services/sweeps/ceiling.py).
    skip_above_divergence: bool = True
    # a tpe sweep's model starts from the finished trials of this earlier sweep of yours
    # (the same objective and search-space paths; services/sweeps/lifecycle.py)
    warm_start: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    # Trial packing (services/sweeps/packing.py): "auto" trains trials of one
    # architecture together in one worker process where the measured rule says it
    # pays; "off" never; an int k packs up to k trials (bounded by max_concurrency).
    packing: Literal["auto", "off"] | int = "auto"

    @model_validator(mode="before")
    @classmethod
    def _printable(cls, data: Any) -> Any:
        return reject_control_characters(data)

    @field_validator("packing", mode="before")
    @classmethod
    def _packing(cls, value: Any) -> Any:
        ok = value in ("auto", "off") if isinstance(value, str) else None
        if ok is None and isinstance(value, int) and not isinstance(value, bool):
            ok = 2 <= value <= MAX_PACK_SIZE
        if not ok:
            raise ValueError(f'packing is "auto", "off" or an integer from 2 to {MAX_PACK_SIZE}')
        return value

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
        tested = [path for path, param in self.parameters.items() if param.range_test]
        if len(tested) > 1:
            raise error_at(f"parameters.{tested[1]}", "one parameter at most takes range_test")
        for path in tested:
            if path.rsplit(".", 1)[-1] != "learning_rate":
                raise error_at(f"parameters.{path}", "range_test is for a learning rate")
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


class SweepExtend(Strict):
    """``POST /sweeps/<id>/extend``: how many more trials."""

    n_trials: Annotated[int, Field(ge=1)]


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
    normalized = trainer_normalize(trainer_spec(base), prefix="base")
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
    for trial in _trials_to_check(sweep, base, limits):
        _check_trial(sweep, base, base_problem, trial, limits)
    return sweep


#: At most this many inline dataset values x trials are validated as whole job specs
#: (~1 s: a trial costs ~70 ms per 48,000 inline values); a sweep over a larger inline
#: set is checked one parameter value at a time instead (each value on the base).
CHECK_INLINE_VALUES = 500_000

#: One trial to check: per swept path, ``(index of the value or None, value)``.
Trial = dict[str, tuple[int | None, Any]]


def _trials_to_check(sweep: SweepCreate, base: dict[str, Any], limits: Limits) -> list[Trial]:
    """Every trial of a grid; for random and TPE every corner of the space (each
    parameter at its bounds, or each of its choices), which bounds what a drawn trial
    can ask for. More than ``max_trials`` corners, or a large inline dataset: each value
    alone on the base."""
    options = [
        [(i if param.values is not None else None, v) for i, v in enumerate(param.probe_values())]
        for param in sweep.parameters.values()
    ]
    combinations = math.prod(len(values) for values in options)
    X = base.get("dataset", {}).get("X") or []
    inline = sum(len(row) if isinstance(row, list) else 1 for row in X)
    if combinations <= limits.max_trials and combinations * inline <= CHECK_INLINE_VALUES:
        return [
            dict(zip(sweep.parameters, combo, strict=True)) for combo in itertools.product(*options)
        ]
    return [
        {path: value}
        for path, values in zip(sweep.parameters, options, strict=True)
        for value in values
    ]


def _where(path: str, index: int | None) -> str:
    return f"parameters.{path}" + (f".values.{index}" if index is not None else "")


def _blame(trial: Trial, locs: list[str]) -> str:
    """The loc of the swept value a problem at the job spec's ``locs`` comes from: the
    parameter that sets that field (or a part of it), else the only one, else all."""
    for path, (index, _) in trial.items():
        if any(
            loc == path or loc.startswith(f"{path}.") or path.startswith(f"{loc}.") for loc in locs
        ):
            return _where(path, index)
    if len(trial) == 1:
        ((path, (index, _)),) = trial.items()
        return _where(path, index)
    return "parameters"


def _describe(trial: Trial) -> str:
    if len(trial) == 1:
        ((_, (_, value)),) = trial.items()
        return f"value {value!r}"
    return "trial " + ", ".join(f"{path}={value!r}" for path, (_, value) in trial.items())


def _check_trial(
    sweep: SweepCreate,
    base: dict[str, Any],
    base_problem: tuple[tuple[str, ...], str] | None,
    trial: Trial,
    limits: Limits,
) -> None:
    """A 422 if ``trial`` (its values applied to the base) is not a valid job within
    the budgets, or has no objective to be ranked by."""
    spec = base
    for path, (_, value) in trial.items():  # in the scheduler's order
        try:
            spec = apply_params(spec, {path: value})
        except (KeyError, IndexError, TypeError) as err:
            raise SpecValidationError(
                "invalid sweep parameter",
                [{"loc": f"parameters.{path}", "msg": f"{_describe(trial)}: {err}"}],
            ) from err
    try:
        normalized = validate_job(spec, limits)
    except SpecValidationError as err:
        msgs = "; ".join(f"{d['loc']}: {d['msg']}" for d in err.details)
        raise SpecValidationError(
            "a sweep parameter gives an invalid job spec",
            [
                {
                    "loc": _blame(trial, [d["loc"] for d in err.details]),
                    "msg": f"{_describe(trial)} gives an invalid spec ({msgs})",
                }
            ],
        ) from err
    problem = _objective_problem(sweep.objective.metric, normalized)
    # blamed on this trial if the base is fine, or if one of its paths decides it
    if problem and (base_problem is None or set(trial) & set(problem[0])):
        raise SpecValidationError(
            "a sweep parameter gives a trial the objective cannot rank",
            [{"loc": _blame(trial, list(problem[0])), "msg": f"{_describe(trial)}: {problem[1]}"}],
        )


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
