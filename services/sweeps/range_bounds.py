"""A sweep whose learning rate takes its bounds from an LR range test.

``"hyperparameters.learning_rate": {"distribution": "log_uniform", "range_test": true}``
(random or TPE sweeps): when the sweep is created, a range test of its base spec is
stored with it (:func:`start_for`; the caller sends its message after the commit)
and the sweep creates no trial until the test has ended. The test's worker then
advances the sweep (as does any recover pass, for a sweep with no active trial):
:func:`resolve` reads the test and fixes the bounds once, in ``Sweep.range_bounds``:

- ``min`` = suggested rate / 10, ``max`` = the rate where the loss started to
  diverge (the test's own upper bound when it never diverged);
- no suggestion (the loss never fell): ``min`` = the test's lower bound;
- ``min >= max`` (the steepest descent right before the divergence): ``min`` =
  ``max`` / 100, so that the sweep still spans two decades below the divergence.

A test that failed ends the sweep, its next trial failed with the test's error.
The sampler reads the bounds through :func:`services.sweeps.space.parameters_of`;
the user's spec keeps ``"range_test": true``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from services.config import Limits
from services.db.models import Sweep
from services.lr_range.rows import RangeTestSettings, create_range_test, range_test_result
from services.specs import ParameterSpec, validate_job

WAITING, READY = "waiting", "ready"


def tested_parameter(spec: dict[str, Any]) -> tuple[str, ParameterSpec] | None:
    """The swept parameter that takes its bounds from a range test, if any."""
    for path, raw in (spec.get("parameters") or {}).items():
        if isinstance(raw, dict) and raw.get("range_test"):
            return path, ParameterSpec.model_validate(raw)
    return None


def start_for(session: Session, sweep: Sweep, limits: Limits | None) -> str | None:
    """Store the range test a new sweep needs (queued; None if it needs none) and
    link it; the caller sends its message once the sweep is committed."""
    tested = tested_parameter(sweep.spec)
    if tested is None:
        return None
    _, param = tested
    low, high = param.range_test_bounds()
    test = create_range_test(
        session,
        spec=validate_job(sweep.spec["base"], limits),
        owner_id=sweep.owner_id,
        settings=RangeTestSettings(min_lr=low, max_lr=high),
        name=f"{sweep.name or 'sweep'} range test",
        experiment=sweep.experiment,
    )
    sweep.range_test_id = test.id
    return str(test.id)


def bounds(
    suggested: float | None, divergence: float | None, low: float, high: float
) -> tuple[float, float]:
    """[suggested / 10, divergence point], with the fallbacks in the module's docstring."""
    top = divergence if divergence is not None else high
    bottom = suggested / 10 if suggested is not None else low
    if bottom >= top:
        bottom = top / 100
    return bottom, top


def resolve(session: Session, sweep: Sweep) -> str:
    """``"ready"`` (no test, or its bounds are fixed now), ``"waiting"`` (the test has
    not ended), or why the sweep cannot go on (the test failed or is gone)."""
    if sweep.range_bounds is not None:
        return READY
    tested = tested_parameter(sweep.spec)
    if tested is None:
        return READY
    if sweep.range_test_id is None:
        return "its range test is gone"
    outcome = range_test_result(session, sweep.range_test_id)
    if outcome is None:
        return "its range test is gone"
    if not outcome.done:
        return WAITING
    if outcome.status != "succeeded":
        return f"its range test {outcome.id} failed: {outcome.error or outcome.status}"
    low, high = bounds(outcome.suggested_lr, outcome.divergence_lr, outcome.min_lr, outcome.max_lr)
    path, _ = tested
    sweep.range_bounds = {
        "parameter": path,
        "min": low,
        "max": high,
        "suggested_lr": outcome.suggested_lr,
        "divergence_lr": outcome.divergence_lr,
    }
    return READY
