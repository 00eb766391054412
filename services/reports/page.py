"""A sweep's report: one self-contained HTML page (``GET /sweeps/<id>/report``, and
``report.html`` on the sweep's MLflow parent run).

The page holds the top of the leaderboard, the learning-rate map, the best
trial's curves, per-layer figure and diagnosis, how often each finding came up
across the trials, and the parameters' importance. Images are inline (data:
URIs), the CSS too; there is no script and no link out, so the file reads the
same saved to disk or opened from MLflow. Every string a user gave (names,
experiment, parameter values, reasons) is escaped by Jinja2's autoescape.

Reads: one query for every trial's few columns, one for the leaderboard's top,
one for the best trial's spec and one for its epochs.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from jinja2 import Environment
from sqlalchemy import select
from sqlalchemy.orm import Session

from services import plots
from services.db.models import TERMINAL_STATUSES, Job, Sweep
from services.mirror.names import short_value
from services.ranking import best_trial_in, leaderboard_page
from services.reports.importance import param_importance
from services.reports.lr_figure import lr_map_png
from services.reports.lr_map import LrMap, NoLearningRateError, build_lr_map
from services.reports.template import REPORT_TEMPLATE
from services.reports.trials import (
    TrialRow,
    job_history,
    job_plot_title,
    sweep_trials,
    swept_parameters,
)

DEFAULT_TOP = 20
#: Trials that ended without a run to diagnose: cancelled by a user, or skipped above
#: their sweep's divergence ceiling (never trained).
UNDIAGNOSED = frozenset({"cancelled", "skipped"})
_ENV = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_TEMPLATE = _ENV.from_string(REPORT_TEMPLATE)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _stamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def finding_counts(trials: Sequence[TrialRow]) -> tuple[list[tuple[str, int]], int, int]:
    """(trials per finding code, most first; trials that ended with no finding; trials that
    ended with a diagnosis to read, not UNDIAGNOSED). A trial counts once per code."""
    counts: Counter[str] = Counter()
    healthy = diagnosed = 0
    for t in trials:
        if t.status not in TERMINAL_STATUSES or t.status in UNDIAGNOSED:
            continue
        diagnosed += 1
        codes = {str(d.get("code", "?")) for d in t.diagnosis or [] if isinstance(d, dict)}
        counts.update(codes)
        healthy += not codes
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])), healthy, diagnosed


def _best(session: Session, sweep: Sweep, best: Job, trial: TrialRow | None) -> dict[str, Any]:
    spec = session.scalar(select(Job.spec).where(Job.id == best.id)) or {}
    findings = [
        {**d, "evidence": json.dumps(d.get("evidence"), sort_keys=True, default=str)}
        for d in (trial.diagnosis if trial is not None else None) or []
        if isinstance(d, dict)
    ]
    return {
        "id": best.id,
        "trial_index": best.trial_index,
        "status": best.status,
        "objective": _number(best.objective),
        "best_epoch": best.best_epoch,
        "params": [(k, short_value(v)) for k, v in (best.params or {}).items()],
        "diagnosis": findings,
        "title": job_plot_title(spec, best.params, best.status),
    }


def sweep_report(
    session: Session,
    sweep: Sweep,
    *,
    top: int = DEFAULT_TOP,
    timings: dict[str, float] | None = None,
) -> str:
    """The report page of ``sweep`` (a row with its spec) as HTML text.

    ``timings``, if given, receives the milliseconds each part took.
    """
    clock = time.perf_counter()
    spent = timings if timings is not None else {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        spent[name] = round((now - clock) * 1000, 1)
        clock = now

    start = clock
    trials = sweep_trials(session, sweep.id, diagnosis=True)
    by_id = {t.id: t for t in trials}
    swept = list(swept_parameters(sweep))
    page = leaderboard_page(session, sweep, limit=top)
    board = [
        {
            "rank": page.first_rank + i if j.objective is not None else None,
            "trial_index": j.trial_index,
            "status": j.status,
            "objective": _number(j.objective),
            "best_epoch": j.best_epoch,
            "epochs_done": j.epochs_done,
            "cells": [short_value((j.params or {}).get(p)) for p in swept],
        }
        for i, j in enumerate(page.trials)
    ]
    lap("rows")
    lr_png, lr_note, lr_data = None, "", None
    try:
        lr_data = build_lr_map(sweep, trials)
        lr_png = _b64(lr_map_png(lr_data))
    except NoLearningRateError as err:
        lr_note = f"No learning-rate map: {err}."
    lap("lr_map")
    found = best_trial_in(session, sweep, page)
    best = _best(session, sweep, found[0], by_id.get(found[0].id)) if found else None
    curves = layers = None
    if best is not None:
        history = job_history(session, best["id"])
        if history:
            curves = _b64(plots.learning_curve_png(history, title=best["title"]))
            layers = _b64(plots.layers_png(history, title=best["title"]))
    lap("best_trial")
    findings, healthy, diagnosed = finding_counts(trials)
    importance = param_importance(swept_parameters(sweep), sweep.objective_goal, trials)
    lap("importance")
    statuses = Counter(t.status for t in trials)
    html = _TEMPLATE.render(
        title=sweep.name or f"sweep {sweep.id[:8]}",
        sweep=sweep,
        n_trials=len(trials),
        counts=sorted(statuses.items()),
        created=_stamp(sweep.created_at),
        finished=_stamp(sweep.finished_at),
        swept=swept,
        top=top,
        board=board,
        lr_map_png=lr_png,
        lr_map_note=lr_note,
        ceilings=lr_data.ceilings if isinstance(lr_data, LrMap) else [],
        best=best,
        curves_png=curves,
        layers_png=layers,
        findings=findings,
        healthy=healthy,
        diagnosed=diagnosed,
        importance=importance,
        now=_stamp(datetime.now(timezone.utc)),
        build_ms=round((time.perf_counter() - start) * 1000),
    )
    lap("render")
    return html
