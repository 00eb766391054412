"""The MLflow side: experiments, runs found by their sweeplab tags, and the
tags, params and artifacts a run holds."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from services.db.models import TERMINAL_STATUSES as TERMINAL
from services.mirror.models import job_model_files
from services.mirror.names import (
    MAX_TAG_VALUE,
    architecture_string,
    clip,
    get_path,
    history_csv,
    n_outputs,
    param_value,
)
from services.mirror.snapshots import JobSnapshot, SweepSnapshot, final_weights
from services.reports.trials import job_plot_title

log = logging.getLogger(__name__)

# MLflow 3's UI opens an experiment without this tag in its GenAI mode (traces,
# prompts); ours are model-training experiments, shown with runs and metrics.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


MANAGED_TAG = "sweeplab.managed"
EXPERIMENT_TAGS = {MANAGED_TAG: "true", EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
# How many "<name> (sweeplab N)" stand-ins are tried before the mirror gives up.
MAX_STAND_INS = 20


_experiments: dict[tuple[str, str], str] = {}


def experiment_candidates(name: str) -> list[str]:
    """The names sweeplab may write under for the experiment ``name``, in order."""
    return [name, f"{name} (sweeplab)"] + [
        f"{name} (sweeplab {i})" for i in range(2, MAX_STAND_INS + 1)
    ]


def _is_ours(exp: Any) -> bool:
    return (exp.tags or {}).get(MANAGED_TAG) == "true"


def _usable(client: Any, exp: Any) -> str | None:
    """The id of ``exp`` if sweeplab may write into it, else None (with a warning)."""
    if exp.lifecycle_stage != "active":
        log.warning(
            "MLflow experiment %r (id %s) is deleted: sweeplab leaves it deleted "
            "and writes under another name",
            exp.name,
            exp.experiment_id,
        )
        return None
    if not _is_ours(exp):
        log.warning(
            "MLflow experiment %r (id %s) was not created by sweeplab (no %s tag): "
            "sweeplab does not write into it and uses another name",
            exp.name,
            exp.experiment_id,
            MANAGED_TAG,
        )
        return None
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return str(exp.experiment_id)


def experiment_id_for(client: Any, tracking_uri: str, name: str) -> str:
    """The id of the experiment sweeplab writes ``name``'s runs into.

    sweeplab writes only into experiments it created (tagged
    ``sweeplab.managed=true``) and never restores a deleted one. When ``name``
    is taken by an experiment that is not ours, or by a deleted one (MLflow
    keeps the name of a deleted experiment), the runs go to ``"<name>
    (sweeplab)"`` (then ``"<name> (sweeplab 2)"``, ...), created and tagged by
    sweeplab; the log says why. The API's links name the experiment used.
    """
    key = (tracking_uri, name)
    if key in _experiments:
        return _experiments[key]
    from mlflow.exceptions import MlflowException  # late: heavy (mlflow)

    for candidate in experiment_candidates(name):
        exp = client.get_experiment_by_name(candidate)
        if exp is None:
            try:
                exp_id = str(client.create_experiment(candidate, tags=EXPERIMENT_TAGS))
            except MlflowException:  # created by another process in between
                exp = client.get_experiment_by_name(candidate)
                if exp is None:
                    raise
                found = _usable(client, exp)
                if found is None:
                    continue
                exp_id = found
        else:
            found = _usable(client, exp)
            if found is None:
                continue
            exp_id = found
        if candidate != name:
            log.warning("sweeplab writes the runs of experiment %r into %r", name, candidate)
        _experiments[key] = exp_id
        return exp_id
    raise RuntimeError(
        f"no MLflow experiment to write into for {name!r}: it and its "
        f"{MAX_STAND_INS} stand-in names are taken by deleted experiments or ones "
        "sweeplab did not create"
    )


def find_run(client: Any, experiment_id: str, tag: str, value: str, kind: str) -> str | None:
    """The active run tagged ``tag = value`` in the experiment, if there is one.

    A run deleted in MLflow stays deleted: the caller creates a new one (and
    logs everything into it again), as for a run that never existed.
    """
    from mlflow.entities import ViewType  # late: heavy (mlflow)

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tag}` = '{value}' and tags.`sweeplab.kind` = '{kind}'",
        run_view_type=ViewType.ALL,
        max_results=5,
        order_by=["attributes.start_time ASC"],
    )
    active = [r for r in runs if r.info.lifecycle_stage == "active"]
    if runs and not active:
        log.warning(
            "the MLflow run of %s %s (run %s) was deleted in MLflow: sweeplab leaves it "
            "deleted and mirrors into a new run",
            kind,
            value,
            runs[0].info.run_id,
        )
    return active[0].info.run_id if active else None


def run_tags(pairs: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import RunTag  # late: heavy (mlflow)

    return [RunTag(k, clip(str(v), MAX_TAG_VALUE)) for k, v in pairs.items() if v is not None]


def run_params(pairs: Mapping[str, str]) -> list[Any]:
    from mlflow.entities import Param  # late: heavy (mlflow)

    return [Param(k, v) for k, v in pairs.items()]


def job_tags(snap: JobSnapshot, sweep_run_id: str | None) -> dict[str, Any]:
    codes = [d.get("code", "?") for d in snap.diagnosis or [] if isinstance(d, Mapping)]
    tags: dict[str, Any] = {
        "sweeplab.kind": "job",
        "sweeplab.job_id": snap.id,
        "sweeplab.sweep_id": snap.sweep_id or "",
        "sweeplab.status": snap.status,
        "sweeplab.architecture": architecture_string(
            snap.spec, n_outputs(snap), (snap.result or {}).get("architecture")
        ),
        "sweeplab.dataset": get_path(snap.spec, "dataset.name"),
    }
    if snap.sweep_id:
        tags["mlflow.parentRunId"] = sweep_run_id
        tags["sweeplab.trial_index"] = snap.trial_index
    if snap.status in TERMINAL:
        tags["sweeplab.diagnosis"] = ",".join(codes) if codes else "healthy"
        tags["sweeplab.diverged"] = str(snap.status == "diverged").lower()
        tags["sweeplab.pruned"] = str(snap.status == "pruned").lower()
        tags["sweeplab.best_epoch"] = snap.best_epoch
        tags["sweeplab.attempts"] = snap.attempts
        tags["sweeplab.worker"] = snap.worker
        if snap.prune_reason:
            tags["sweeplab.prune_reason"] = snap.prune_reason
        note = [f"sweeplab job `{snap.id}`: **{snap.status}**"]
        if snap.error:
            note.append(f"\n\nError:\n\n```\n{snap.error}\n```")
        if snap.prune_reason:
            note.append(f"\n\nPruned: {snap.prune_reason}")
        for d in snap.diagnosis or []:
            if isinstance(d, Mapping):
                note.append(f"\n\n- **{d.get('code')}**: {d.get('message', '')}")
        tags["mlflow.note.content"] = "".join(note)
    return tags


def sweep_params(sweep: SweepSnapshot) -> dict[str, str]:
    spec = sweep.spec
    params = {
        "sweep.method": sweep.method,
        "sweep.objective": f"{sweep.objective_metric} ({sweep.objective_goal})",
        "sweep.n_trials": str(sweep.n_trials),
        "sweep.max_concurrency": str(sweep.max_concurrency),
    }
    for key in ("parameters", "early_stopping"):
        if spec.get(key) is not None:
            params[f"sweep.{key}"] = param_value(spec[key])
    return params


#: A trial of a sweep larger than TRIAL_PLOTS_UP_TO gets its PNGs (learning curve, layers)
#: only if it trained TRIAL_PLOT_MIN_SECONDS or more: drawing one costs ~0.1 s of a
#: worker process, more than a tiny trial's whole run, times thousands of trials
#: (MLflow charts every run's metrics itself; the parent run holds the sweep's plot).
TRIAL_PLOTS_UP_TO = 100
TRIAL_PLOT_MIN_SECONDS = 1.0


def draws_learning_curve(snap: JobSnapshot) -> bool:
    """Single jobs and the trials of sweeps up to TRIAL_PLOTS_UP_TO trials always
    get the PNG; in larger sweeps, the trials that trained long enough."""
    if snap.sweep_id is None or (snap.sweep_size or 0) <= TRIAL_PLOTS_UP_TO:
        return True
    return (snap.train_seconds or 0.0) >= TRIAL_PLOT_MIN_SECONDS


def run_artifacts(
    settings: Any, snap: JobSnapshot, history: list[dict[str, Any]]
) -> dict[str, bytes]:
    from services import plots  # late: heavy (matplotlib)

    files = {
        "spec.json": json.dumps(snap.spec, indent=2, sort_keys=True).encode(),
        "history.csv": history_csv(history).encode(),
        "diagnosis.json": json.dumps(snap.diagnosis or [], indent=2).encode(),
    }
    if history and draws_learning_curve(snap):  # as GET /jobs/<id>/plots/{curves,layers}.png
        title = job_plot_title(snap.spec, snap.params, snap.status)
        files["learning_curve.png"] = plots.learning_curve_png(history, title=title)
        files["layers.png"] = plots.layers_png(history, title=title)
    weights = final_weights(settings, snap.id)
    if weights is not None:
        files[weights[0]] = weights[1]
        if weights[0] == "weights.npz":  # a succeeded job's final weights: an MLflow model
            files.update(job_model_files(settings, snap, weights[1]))
    return files


def marked_best(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best trial as the API ranks it (``services.sweeps.best_trial``)."""
    return next((t for t in trials if t["best"]), None)
