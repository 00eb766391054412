"""What the mirror writes, as pure functions: params from a spec, metrics from an
epoch record, run names, architecture strings, UI links. No I/O."""

from __future__ import annotations

import csv
import io
import json
import math
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from services.trainer import flatten_record

DEFAULT_EXPERIMENT = "sweeplab"


MAX_PARAM_VALUE = 6000


MAX_TAG_VALUE = 8000


MAX_KEY = 250


RUN_STATUS = {
    "queued": "SCHEDULED",
    "running": "RUNNING",
    "succeeded": "FINISHED",
    "failed": "FAILED",
    "diverged": "FAILED",
    "cancelled": "KILLED",
    "timed_out": "KILLED",
    "pruned": "KILLED",
    "skipped": "KILLED",
}


SWEEP_RUN_STATUS = {"done": "FINISHED", "cancelled": "KILLED", "failed": "FAILED"}


ABBREVIATIONS = {
    "hyperparameters.learning_rate": "lr",
    "hyperparameters.batch_size": "bs",
    "hyperparameters.momentum": "mom",
    "hyperparameters.optimizer": "opt",
    "hyperparameters.l2": "l2",
    "hyperparameters.dropout": "drop",
    "hyperparameters.epochs": "ep",
    "hyperparameters.gradient_clip_norm": "clip",
    "architecture.initializer": "init",
}


def enabled(settings: Any) -> bool:
    """Return True when mirroring is configured (``mlflow_tracking_uri`` set)."""
    return bool(getattr(settings, "mlflow_tracking_uri", None))


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + "...[truncated]"


def param_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool) or value is None:
        text = str(value)
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, separators=(",", ":"), default=str)
    return clip(text, MAX_PARAM_VALUE)


def flatten_spec(spec: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a job spec to MLflow params with dotted keys.

    Nested objects and lists of objects recurse (``architecture.layers.0.units``);
    lists of plain values (inline data arrays, schedule milestones) become one
    JSON value. Values are strings cut to MLflow's 6000-character limit.
    """
    out: dict[str, str] = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_spec(value, path + "."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                out.update(flatten_spec(item, f"{path}.{i}."))
        else:
            out[path[:MAX_KEY]] = param_value(value)
    return out


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """Return the finite numbers of one epoch record, flat, without ``epoch``.

    Per-layer lists become ``grad_norm.layer_0`` and so on (the trainer's
    ``flatten_record`` shape); ``None`` and non-finite values are left out
    (MLflow cannot plot them and the diverged epoch carries ``None``).
    """
    out: dict[str, float] = {}
    for key, value in flatten_record(dict(record)).items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key[:MAX_KEY]] = float(value)
    return out


def get_path(spec: Mapping[str, Any], dotted: str) -> Any:
    node: Any = spec
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, Mapping) and "units" in v for v in value)
    ):  # hidden layers: 64relu-32tanh
        return "-".join(f"{v['units']}{v.get('activation', 'relu')}" for v in value)
    if isinstance(value, Mapping | list):
        text = json.dumps(value, separators=(",", ":"))
        return text if len(text) <= 40 else text[:39] + "…"
    return str(value)


def abbreviate(key: str) -> str:
    if key in ABBREVIATIONS:
        return ABBREVIATIONS[key]
    parts = key.split(".")
    if len(parts) >= 4 and parts[:2] == ["architecture", "layers"] and parts[2].isdigit():
        return f"{parts[3]}{parts[2]}"  # architecture.layers.0.units -> units0
    return parts[-1]


def run_name(spec: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> str:
    """Return a run name a person can scan: ``lr=0.01 bs=32`` plus swept fields.

    ``params`` are a trial's swept values by dotted path; each one not already
    named is appended (``lr=0.01 bs=32 units0=128``).
    """
    names = ["hyperparameters.learning_rate", "hyperparameters.batch_size"]
    names += [k for k in (params or {}) if k not in names]
    parts = []
    for key in names:
        value = (params or {}).get(key, get_path(spec, key))
        if key == "hyperparameters.batch_size" and value is None and key in (params or {}):
            value = "full"
        if value is None and key not in (params or {}):
            continue
        parts.append(f"{abbreviate(key)}={short_value(value)}")
    return " ".join(parts) or "run"


def architecture_string(
    spec: Mapping[str, Any],
    n_outputs: int | None = None,
    built: Mapping[str, Any] | None = None,
) -> str:
    """Return ``64-relu > 32-tanh > 10-softmax`` for a spec.

    ``built`` is the trained network's ``architecture()`` (``sizes`` from the
    input width on, one activation per layer), which knows the output width.
    Without it the output width comes from ``n_outputs``, and without that the
    output shows as its activation alone.
    """
    if built and built.get("sizes") and built.get("activations"):
        sizes, acts = list(built["sizes"]), list(built["activations"])
        if len(sizes) == len(acts) + 1:
            if built.get("output_activation"):
                acts[-1] = built["output_activation"]
            return " > ".join(f"{n}-{a}" for n, a in zip(sizes[1:], acts, strict=True))
    arch = spec.get("architecture") or {}
    parts = [
        f"{layer.get('units')}-{layer.get('activation', 'relu')}"
        for layer in arch.get("layers") or []
    ]
    out_act = arch.get("output_activation") or "auto"
    parts.append(f"{n_outputs}-{out_act}" if n_outputs else out_act)
    return " > ".join(parts)


def n_outputs(snap: Any) -> int | None:
    """The output layer's width, from the trainer's result (its dataset summary)."""
    result = snap.result or {}
    arch = result.get("architecture")
    if isinstance(arch, Mapping) and isinstance(arch.get("sizes"), list) and arch["sizes"]:
        return int(arch["sizes"][-1])
    data = result.get("dataset")
    if not isinstance(data, Mapping):
        return None
    if data.get("task") == "classification" and isinstance(data.get("n_classes"), int):
        out_act = get_path(getattr(snap, "spec", None) or {}, "architecture.output_activation")
        return 1 if data["n_classes"] == 2 and out_act == "sigmoid" else data["n_classes"]
    if data.get("task") == "regression":
        return 1
    return None


def history_csv(history: Sequence[Mapping[str, Any]]) -> str:
    """Return the per-epoch history as CSV (one row per epoch, flattened columns)."""
    rows = [{"epoch": r.get("epoch"), **epoch_metrics(r)} for r in history]
    columns = ["epoch"] + sorted({k for row in rows for k in row if k != "epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


UI_WORKFLOW = "machine_learning"


def ui_links(
    ui_url: str, experiment_id: str, run_id: str | None, compare_run_ids: Sequence[str]
) -> dict[str, Any]:
    """Build the MLflow UI links for a run and a comparison of runs.

    A bare ``#/experiments/<id>`` lands on a GenAI overview in MLflow 3, so the
    experiment link is its runs table; the compare view takes URL-encoded JSON
    lists of run and experiment ids. Each link asks for the UI's "Model
    training" mode (``workflowType``), which otherwise defaults to GenAI.
    """
    base = ui_url.rstrip("/")
    mode = f"workflowType={UI_WORKFLOW}"
    runs = urllib.parse.quote(json.dumps(list(compare_run_ids), separators=(",", ":")))
    exps = urllib.parse.quote(json.dumps([experiment_id], separators=(",", ":")))
    experiment = f"{base}/#/experiments/{experiment_id}/runs"
    return {
        "experiment_id": experiment_id,
        "run_id": run_id,
        "run_url": f"{experiment}/{run_id}?{mode}" if run_id else None,
        "experiment_url": f"{experiment}?{mode}",
        "compare_url": f"{base}/#/compare-runs?runs={runs}&experiments={exps}&{mode}",
    }


def to_ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def experiment_name(value: str | None) -> str:
    return (value or "").strip() or DEFAULT_EXPERIMENT
