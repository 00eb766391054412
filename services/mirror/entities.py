"""The MLflow side: experiments, runs found by their sweeplab tags, and the
tags, params and artifacts a run holds."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from services.db.models import TERMINAL_STATUSES as TERMINAL
from services.mirror.names import (
    MAX_TAG_VALUE,
    architecture_string,
    clip,
    get_path,
    history_csv,
    n_outputs,
    param_value,
    run_name,
)
from services.mirror.snapshots import JobSnapshot, SweepSnapshot, final_weights

# MLflow 3's UI opens an experiment without this tag in its GenAI mode (traces,
# prompts); ours are model-training experiments, shown with runs and metrics.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


EXPERIMENT_TAGS = {"sweeplab.managed": "true", EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}


_experiments: dict[tuple[str, str], str] = {}


def experiment_id_for(client: Any, tracking_uri: str, name: str) -> str:
    key = (tracking_uri, name)
    if key in _experiments:
        return _experiments[key]
    from mlflow.exceptions import MlflowException  # late: heavy (mlflow)

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = client.create_experiment(name, tags=EXPERIMENT_TAGS)
        except MlflowException:  # created by another process in between
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp_id)
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    _experiments[key] = exp_id
    return exp_id


def find_run(client: Any, experiment_id: str, tag: str, value: str, kind: str) -> str | None:
    from mlflow.entities import ViewType  # late: heavy (mlflow)

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tag}` = '{value}' and tags.`sweeplab.kind` = '{kind}'",
        run_view_type=ViewType.ALL,
        max_results=5,
        order_by=["attributes.start_time ASC"],
    )
    if not runs:
        return None
    run = runs[0]
    if run.info.lifecycle_stage == "deleted":
        client.restore_run(run.info.run_id)
    return run.info.run_id


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


def run_artifacts(
    settings: Any, snap: JobSnapshot, history: list[dict[str, Any]]
) -> dict[str, bytes]:
    from services import plots  # late: heavy (matplotlib)

    files = {
        "spec.json": json.dumps(snap.spec, indent=2, sort_keys=True).encode(),
        "history.csv": history_csv(history).encode(),
        "diagnosis.json": json.dumps(snap.diagnosis or [], indent=2).encode(),
    }
    if history:
        title = f"{run_name(snap.spec, snap.params)} ({snap.status})"
        files["learning_curve.png"] = plots.learning_curve_png(history, title=title)
    weights = final_weights(settings, snap.id)
    if weights is not None:
        files[weights[0]] = weights[1]
    return files


def marked_best(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best trial as the API ranks it (``services.sweeps.best_trial``)."""
    return next((t for t in trials if t["best"]), None)
