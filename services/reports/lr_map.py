"""A sweep's learning-rate map: each trial's objective against log10 of its learning rate.

One line per combination of the other swept parameters; diverged trials are
red crosses along the top, pruned trials triangles (at the objective of the
epoch they were stopped at), skipped trials hollow squares along the top,
trials that failed otherwise hollow circles; the zone above each
combination's divergence ceiling is shaded.

A combination's ceiling is the smallest rate that diverged in it, the rule by
which a divergence-aware sweep (``skip_above_divergence``, on by default) skips
the trials at or above it: ``source: "sweep"`` then, and ``"derived"`` for a
sweep that skips nothing (the zone is still where its trials diverged). A
ceiling stored on the sweep's row (``divergence_ceiling``: one rate, or
``{"learning_rate", "trial_id"}``, for every combination, or such entries per
combination keyed by its label or its parameters as JSON) wins over both.

:func:`build_lr_map` gives the data (the JSON answer);
``services.reports.lr_figure.lr_map_png`` draws exactly that data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from services.db.models import Sweep
from services.mirror.names import abbreviate, short_value
from services.reports.trials import TrialRow, learning_rate_path, swept_parameters

#: Trials that are on the map: they ended, and not by a user's cancel.
MAPPED = frozenset({"succeeded", "diverged", "pruned", "skipped", "failed", "timed_out"})


class NoLearningRateError(LookupError):
    """The sweep does not sweep a learning rate: it has no LR map."""


class LrObjective(BaseModel):
    metric: str
    goal: str


class LrCombination(BaseModel):
    """A combination of the other swept parameters (a line on the map)."""

    label: str
    params: dict[str, Any]


class LrPoint(BaseModel):
    """One trial on the map."""

    job_id: str
    trial_index: int | None
    learning_rate: float
    log10_learning_rate: float
    objective: float | None
    status: str
    combination: str
    reason: str | None = None


class LrCeiling(BaseModel):
    """The divergence ceiling of a combination (``combination`` None: of every one)."""

    combination: str | None
    learning_rate: float
    log10_learning_rate: float
    trial_id: str | None = None
    source: Literal["sweep", "derived"]


class LrMap(BaseModel):
    """The data the LR map draws (``GET /sweeps/<id>/lr-map.json``)."""

    sweep_id: str
    objective: LrObjective
    learning_rate_parameter: str
    other_parameters: list[str]
    combinations: list[LrCombination]
    points: list[LrPoint]
    ceilings: list[LrCeiling]
    best: LrPoint | None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def combination_label(others: Sequence[str], params: Mapping[str, Any]) -> str:
    """``bs=32 units0=64``: the other swept parameters of a trial ("" when there are none)."""
    return " ".join(f"{abbreviate(k)}={short_value(params.get(k))}" for k in others)


def _ceiling(entry: Any) -> tuple[float, str | None] | None:
    """(rate, trial id) of one ceiling entry: a number or ``{"learning_rate", "trial_id"}``."""
    if _finite(entry) and entry > 0:
        return float(entry), None
    if isinstance(entry, Mapping) and _finite(entry.get("learning_rate")):
        rate = float(entry["learning_rate"])
        trial = entry.get("trial_id") or entry.get("job_id")
        return (rate, str(trial) if trial is not None else None) if rate > 0 else None
    return None


def sweep_ceilings(
    raw: Any, combinations: Mapping[str, Mapping[str, Any]]
) -> list[LrCeiling] | None:
    """The ceilings a sweep keeps (``Sweep.divergence_ceiling``), None if it keeps none.

    ``raw`` is one entry (a number or ``{"learning_rate", "trial_id"}``) for every
    combination, a list of entries that name their combination (``combination``
    or ``params``), or a dict of entries keyed by a combination's label or its
    parameters as sorted JSON. Entries that match no combination are left out.
    """
    if raw is None:
        return None
    one = _ceiling(raw)
    if one is not None:
        return [_make_ceiling(None, one, "sweep")]
    by_json = {
        json.dumps(dict(p), sort_keys=True, default=str): label for label, p in combinations.items()
    }

    def label_of(key: Any) -> str | None:
        if isinstance(key, Mapping):
            key = json.dumps(dict(key), sort_keys=True, default=str)
        if not isinstance(key, str):
            return None
        return key if key in combinations else by_json.get(key)

    pairs: list[tuple[Any, Any]] = []
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = [(e.get("combination", e.get("params")), e) for e in raw if isinstance(e, Mapping)]
    found = []
    for key, entry in pairs:
        label, value = label_of(key), _ceiling(entry)
        if label is not None and value is not None:
            found.append(_make_ceiling(label, value, "sweep"))
    return found


def _make_ceiling(label: str | None, value: tuple[float, str | None], source: str) -> LrCeiling:
    rate, trial = value
    return LrCeiling(
        combination=label,
        learning_rate=rate,
        log10_learning_rate=math.log10(rate),
        trial_id=trial,
        source=source,  # type: ignore[arg-type]
    )


def derived_ceilings(points: Sequence[LrPoint], source: str = "derived") -> list[LrCeiling]:
    """Per combination, the smallest learning rate that diverged (the lowest trial
    index among equals), as ``services.sweeps.ceiling`` finds it."""
    lowest: dict[str, LrPoint] = {}
    for p in points:
        if p.status == "diverged":
            seen = lowest.get(p.combination)
            if seen is None or p.learning_rate < seen.learning_rate:
                lowest[p.combination] = p
    return [
        _make_ceiling(label, (p.learning_rate, p.job_id), source)
        for label, p in sorted(lowest.items())
    ]


def build_lr_map(sweep: Sweep, trials: Sequence[TrialRow]) -> LrMap:
    """The LR map's data. Raises :class:`NoLearningRateError` when no swept parameter's
    path ends in ``learning_rate``."""
    parameters = swept_parameters(sweep)
    lr_path = learning_rate_path(parameters)
    if lr_path is None:
        raise NoLearningRateError(
            f"sweep {sweep.id} does not sweep a learning rate (its parameters: "
            f"{', '.join(parameters) or 'none'})"
        )
    others = [p for p in parameters if p != lr_path]
    combinations: dict[str, dict[str, Any]] = {}
    points: list[LrPoint] = []
    for t in trials:
        rate = t.params.get(lr_path)
        if t.status not in MAPPED or not _finite(rate) or float(rate) <= 0:  # type: ignore[arg-type]
            continue
        rate = float(rate)  # type: ignore[arg-type]
        label = combination_label(others, t.params)
        combinations.setdefault(label, {k: t.params.get(k) for k in others})
        points.append(
            LrPoint(
                job_id=t.id,
                trial_index=t.trial_index,
                learning_rate=rate,
                log10_learning_rate=math.log10(rate),
                objective=t.objective if _finite(t.objective) else None,
                status=t.status,
                combination=label,
                reason=t.reason if t.status in ("pruned", "skipped", "failed") else None,
            )
        )
    points.sort(key=lambda p: (p.combination, p.learning_rate, p.trial_index or 0))
    kept = sweep_ceilings(getattr(sweep, "divergence_ceiling", None), combinations)
    skips = (sweep.spec or {}).get("skip_above_divergence", True) is not False
    ceilings = (
        kept if kept is not None else derived_ceilings(points, "sweep" if skips else "derived")
    )
    finished = [p for p in points if p.status == "succeeded" and p.objective is not None]
    sign = -1.0 if sweep.objective_goal == "maximize" else 1.0
    best = min(
        finished, key=lambda p: (sign * (p.objective or 0.0), p.trial_index or 0), default=None
    )
    return LrMap(
        sweep_id=sweep.id,
        objective=LrObjective(metric=sweep.objective_metric, goal=sweep.objective_goal),
        learning_rate_parameter=lr_path,
        other_parameters=others,
        combinations=[LrCombination(label=k, params=v) for k, v in sorted(combinations.items())],
        points=points,
        ceilings=ceilings,
        best=best,
    )
