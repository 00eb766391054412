"""Search spaces: a sweep's parameters, the points of a grid, reproducible random points."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from services.db.models import (
    Sweep,
)
from services.specs import (
    ParameterSpec,
)


def parameters_of(sweep: Sweep) -> dict[str, ParameterSpec]:
    """The sweep's search space; a ``range_test`` learning rate with the bounds its
    test gave (``Sweep.range_bounds``, services.sweeps.range_bounds)."""
    fixed = sweep.range_bounds or {}
    space = {}
    for path, raw in sweep.spec["parameters"].items():
        if raw.get("range_test") and fixed.get("parameter") == path:
            raw = {**raw, "min": fixed["min"], "max": fixed["max"], "range_test": False}
        space[path] = ParameterSpec.model_validate(raw)
    return space


def grid_point(parameters: dict[str, ParameterSpec], index: int) -> dict[str, Any]:
    """The ``index``-th point of the grid, in ``itertools.product`` order."""
    point: dict[str, Any] = {}
    for path, param in reversed(list(parameters.items())):
        values = param.values or []
        index, i = divmod(index, len(values))
        point[path] = values[i]
    return {path: point[path] for path in parameters}


def random_point(parameters: dict[str, ParameterSpec], seed: int, index: int) -> dict[str, Any]:
    """A reproducible random point: the generator is seeded by (sweep seed, trial index)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, index])
    point: dict[str, Any] = {}
    for path, p in parameters.items():
        if p.values is not None:
            point[path] = p.values[int(rng.integers(len(p.values)))]
            continue
        assert p.min is not None and p.max is not None
        if p.distribution == "uniform":
            point[path] = float(rng.uniform(p.min, p.max))
        elif p.distribution == "log_uniform":
            point[path] = float(math.exp(rng.uniform(math.log(p.min), math.log(p.max))))
        else:  # int_uniform, both ends included
            point[path] = int(rng.integers(int(p.min), int(p.max) + 1))
    return point
