"""Which swept parameters mattered: Optuna's importance evaluator over the finished trials.

The study is built in memory from the database's rows (``create_trial`` /
``add_trial``); Optuna never touches a storage. Only trials that succeeded
with a finite objective count, and only parameters that took two or more
values among them; with fewer than MIN_TRIALS such trials, or fewer than two
such parameters (one alone would get an importance of 1 by definition), there
is no answer, only the reason why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.reports.trials import TrialRow

MIN_TRIALS = 5
MIN_VARYING = 2
#: fANOVA's forest, seeded so that a report reads the same twice. Optuna's default (64
#: trees, depth 64) took 2.5 s over 1,000 trials of 3 parameters here; 32 trees of depth 6
#: took 0.14 s and ranked them the same (0.29 s and 0.07 s over 100 trials).
N_TREES, MAX_DEPTH, SEED = 32, 6, 0


@dataclass
class Importance:
    """Each varying parameter's share of the objective's variance (they add up to 1),
    largest first; or why there is none (``reason``)."""

    values: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    n_trials: int = 0


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _distribution(spec: Mapping[str, Any], observed: Sequence[Any]) -> tuple[Any, Any]:
    """(an Optuna distribution, value -> the value Optuna is told) for one parameter.

    Listed values (grid, choice) and anything that is not a number are
    categorical, told as an index (any JSON value works); ranges are Float or
    Int distributions, widened to hold every observed value (a range the sweep
    took from a range test, for one, is known only by its trials).
    """
    from optuna.distributions import (  # late: heavy (optuna)
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in observed)
    kind = spec.get("distribution")
    if numbers and kind in ("uniform", "log_uniform", "int_uniform"):
        low = min([float(v) for v in observed] + ([spec["min"]] if "min" in spec else []))
        high = max([float(v) for v in observed] + ([spec["max"]] if "max" in spec else []))
        if kind == "int_uniform":
            return IntDistribution(int(low), int(high)), int
        if kind == "log_uniform" and low > 0:
            return FloatDistribution(low, high, log=True), float
        return FloatDistribution(low, high), float
    choices = list(dict.fromkeys(_key(v) for v in (spec.get("values") or [])))
    choices += [k for k in dict.fromkeys(_key(v) for v in observed) if k not in choices]
    index = {k: i for i, k in enumerate(choices)}
    return CategoricalDistribution(list(range(len(choices)))), lambda v: index[_key(v)]


def param_importance(
    parameters: Mapping[str, Any], goal: str, trials: Sequence[TrialRow]
) -> Importance:
    """Optuna's ``get_param_importances`` (fANOVA) over the sweep's finished trials."""
    finished = [
        t
        for t in trials
        if t.status == "succeeded"
        and isinstance(t.objective, int | float)
        and math.isfinite(t.objective)
        and all(p in t.params for p in parameters)
    ]
    if len(finished) < MIN_TRIALS:
        return Importance(
            reason=f"{len(finished)} trial(s) finished with an objective; parameter "
            f"importance needs {MIN_TRIALS} or more",
            n_trials=len(finished),
        )
    varying = [p for p in parameters if len({_key(t.params[p]) for t in finished}) >= 2]
    if len(varying) < MIN_VARYING:
        which = f"only {varying[0]} varies" if varying else "no swept parameter varies"
        return Importance(
            reason=f"{which} among the finished trials; importance compares "
            f"{MIN_VARYING} or more parameters",
            n_trials=len(finished),
        )
    import optuna  # late: heavy (optuna)
    from optuna.importance import FanovaImportanceEvaluator  # late: heavy (optuna)
    from optuna.trial import create_trial  # late: heavy (optuna)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists, tell = {}, {}
    for p in varying:
        spec = parameters.get(p) or {}
        dists[p], tell[p] = _distribution(spec, [t.params[p] for t in finished])
    study = optuna.create_study(direction="maximize" if goal == "maximize" else "minimize")
    study.add_trials(
        [
            create_trial(
                params={p: tell[p](t.params[p]) for p in varying},
                distributions=dists,
                value=float(t.objective),  # type: ignore[arg-type]
            )
            for t in finished
        ]
    )
    values = optuna.importance.get_param_importances(
        study, evaluator=FanovaImportanceEvaluator(n_trees=N_TREES, max_depth=MAX_DEPTH, seed=SEED)
    )
    return Importance(values={k: float(v) for k, v in values.items()}, n_trials=len(finished))
