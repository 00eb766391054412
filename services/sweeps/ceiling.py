"""The divergence ceiling of a sweep: once a learning rate diverged, the trials with a
rate at or above it and otherwise equal parameters are skipped.

A learning-rate sweep that diverged at rate ``r`` learns nothing from ``2r`` except
that it diverges too (slower, for a momentum optimizer, but as surely), so it
does not train it: such a trial ends ``skipped``, never claimed by a worker, with
the reason and the trial that set the ceiling. The rule holds for grid, random and
TPE sweeps alike, per combination of the other swept parameters (two trials share
a combination when every swept parameter but the learning rate has the same value);
a sweep that sweeps no learning rate has no ceiling. ``"skip_above_divergence":
false`` in a sweep's spec turns it off.

The ceiling is derived from the database (the lowest diverged rate of each
combination, one indexed query over the sweep's diverged trials), never stored:
every worker and the API see the same one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.db.models import Job, Sweep, utcnow

SKIPPED = "skipped"


@dataclass(frozen=True)
class Ceiling:
    """The lowest rate that diverged in one combination of the other swept parameters."""

    path: str  # the swept learning rate's dotted path
    learning_rate: float
    trial_id: str
    trial_index: int | None
    others: dict[str, Any]  # the combination: every other swept parameter's value

    def public(self) -> dict[str, Any]:
        return {
            "parameter": self.path,
            "learning_rate": self.learning_rate,
            "trial_id": self.trial_id,
            "trial_index": self.trial_index,
            "params": self.others,
        }

    def reason(self, rate: float) -> str:
        return (
            f"skipped: {self.path} {rate:g} is at or above {self.learning_rate:g}, where trial "
            f"{self.trial_index} ({self.trial_id}) diverged with the same other parameters"
        )


def learning_rate_path(spec: dict[str, Any]) -> str | None:
    """The swept parameter that is a learning rate (its last part is ``learning_rate``)."""
    for path in spec.get("parameters") or {}:
        if path.rsplit(".", 1)[-1] == "learning_rate":
            return str(path)
    return None


def applies(sweep: Sweep) -> str | None:
    """The learning rate's path if the sweep keeps a ceiling, else None."""
    spec = sweep.spec or {}
    if spec.get("skip_above_divergence", True) is False:
        return None
    return learning_rate_path(spec)


def _combination(params: dict[str, Any], path: str) -> str:
    return json.dumps({k: v for k, v in params.items() if k != path}, sort_keys=True, default=str)


def _rate(params: dict[str, Any] | None, path: str) -> float | None:
    value = (params or {}).get(path)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def ceilings(session: Session, sweep: Sweep) -> list[Ceiling]:
    """The sweep's ceilings, lowest diverged rate first (none when it keeps none)."""
    path = applies(sweep)
    if path is None:
        return []
    stmt = select(Job.id, Job.trial_index, Job.params).where(
        Job.sweep_id == sweep.id, Job.status == "diverged"
    )
    lowest: dict[str, Ceiling] = {}
    for job_id, index, params in session.execute(stmt):
        rate = _rate(params, path)
        if rate is None:
            continue
        key = _combination(params, path)
        known = lowest.get(key)
        if known is None or (rate, index or 0) < (known.learning_rate, known.trial_index or 0):
            others = {k: v for k, v in params.items() if k != path}
            lowest[key] = Ceiling(path, rate, job_id, index, others)
    return sorted(lowest.values(), key=lambda c: (c.learning_rate, c.trial_index or 0))


def above(params: dict[str, Any] | None, found: list[Ceiling]) -> Ceiling | None:
    """The ceiling that ``params`` reach (their rate at or above it, same combination)."""
    if not found or not params:
        return None
    path = found[0].path
    rate = _rate(params, path)
    if rate is None:
        return None
    key = _combination(params, path)
    for ceiling in found:
        if rate >= ceiling.learning_rate and _combination(ceiling.others, path) == key:
            return ceiling
    return None


def skip_values(ceiling: Ceiling, rate: float) -> dict[str, Any]:
    """The columns of a trial skipped under ``ceiling``."""
    now = utcnow()
    return {
        "status": SKIPPED,
        "prune_reason": ceiling.reason(rate),
        "result": {"skipped_by": ceiling.trial_id, "ceiling": ceiling.learning_rate},
        "finished_at": now,
        "updated_at": now,
    }


def skip_queued(session: Session, sweep: Sweep, found: list[Ceiling]) -> list[str]:
    """Skip the sweep's queued trials that the ceilings reach (their messages, when
    delivered, find them ended); returns their ids."""
    if not found:
        return []
    stmt = select(Job.id, Job.params).where(Job.sweep_id == sweep.id, Job.status == "queued")
    skipped = []
    for job_id, params in session.execute(stmt):
        ceiling = above(params, found)
        if ceiling is None:
            continue
        rate = _rate(params, ceiling.path)
        assert rate is not None  # above() found it
        done = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(**skip_values(ceiling, rate))
        )
        if getattr(done, "rowcount", 0):
            skipped.append(job_id)
    return skipped
