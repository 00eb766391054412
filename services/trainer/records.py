"""What ``fit`` hands back and keeps: the epoch records, the best epoch, the result.

A record is a dict per epoch (its keys in ``train.py``'s docstring and
``docs/CONTRACTS.md``); ``flatten_record`` turns it into the flat scalars a
database or MLflow stores and ``unflatten_record`` turns them back, which is
how a resumed run gets the records of the epochs before its checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .checkpoint import Checkpoint
from .data import CLASSIFICATION, Dataset
from .network import Network
from .spec import Spec


@dataclass
class TrainResult:
    """The outcome of ``fit``."""

    status: str
    history: list[dict]
    best_epoch: int | None
    best_metrics: dict | None
    diverged_epoch: int | None
    seconds: float
    diagnosis: list[dict]
    network: Network
    spec: Spec
    dataset: dict = field(default_factory=dict)
    data: Dataset | None = field(default=None, repr=False)
    #: how train_accuracy was measured: mode, and for "after_epoch" the sample's
    #: rows, the training set's rows and the seed that drew the sample
    train_metrics: dict = field(default_factory=dict)

    def predict(self, X) -> np.ndarray:
        """Predictions for raw inputs ``X`` (n, n_features), in the data's own units.

        Applies the training set's standardization to ``X`` first; returns class
        labels for classification and targets (standardization undone) for
        regression. ``network.predict`` is the lower-level call: standardized
        inputs in, probabilities / standardized values out. One sample may be
        given as a vector; its prediction then comes alone (not in an array).
        """
        X, one = self.network.as_rows(X, np.float64)
        if one:
            return self.predict(X)[0]
        d = self.data
        if d is not None and d.feature_mean is not None:
            X = (X - d.feature_mean) / d.feature_std
        out = self.network.predict(X)
        if self.network.task == CLASSIFICATION:
            idx = (out[:, 0] > 0.5).astype(np.int64) if out.shape[1] == 1 else out.argmax(axis=1)
            return np.asarray(d.classes)[idx] if d is not None and d.classes else idx
        out = out.astype(np.float64)
        if d is not None and d.target_mean is not None:
            out = out * d.target_std + d.target_mean
        return out[:, 0] if d is not None and d.y_train.ndim == 1 else out

    def summary(self) -> dict:
        """JSON-serializable result without the history and the network."""
        last = self.history[-1] if self.history else None
        return {
            "status": self.status,
            "epochs": len(self.history),
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "diverged_epoch": self.diverged_epoch,
            "final_metrics": flatten_record(last) if last else None,
            "seconds": self.seconds,
            "diagnosis": self.diagnosis,
            "dataset": self.dataset,
            "n_params": self.network.n_params,
            "train_metrics": self.train_metrics,
        }


def flatten_record(record: dict) -> dict[str, float]:
    """Scalars of a record, per-layer lists as ``"grad_norm.layer_0"`` etc.

    ``None`` entries (non-ReLU layers, missing validation) are left out.
    """
    flat: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                if v is not None:
                    flat[f"{key}.layer_{i}"] = float(v)
        elif value is not None and not isinstance(value, bool):
            flat[key] = float(value)
    return flat


def unflatten_record(flat: dict, n_layers: int, classification: bool) -> dict:
    """The record that ``flatten_record`` turned into ``flat`` (its inverse).

    Entries left out of ``flat`` come back as None; ``n_layers`` sizes the
    per-layer lists, ``classification`` decides whether there are accuracies.
    """

    def scalar(key: str) -> float | None:
        value = flat.get(key)
        return None if value is None else float(value)

    def per_layer(key: str) -> list[float | None]:
        return [scalar(f"{key}.layer_{i}") for i in range(n_layers)]

    record: dict = {
        "epoch": int(flat["epoch"]),
        "train_loss": scalar("train_loss"),
        "val_loss": scalar("val_loss"),
    }
    if classification:
        record["train_accuracy"] = scalar("train_accuracy")
        record["val_accuracy"] = scalar("val_accuracy")
    record["learning_rate"] = scalar("learning_rate")
    record["grad_norm"] = per_layer("grad_norm")
    record["weight_norm"] = per_layer("weight_norm")
    record["dead_relu_fraction"] = per_layer("dead_relu_fraction")
    record["seconds"] = scalar("seconds")
    return record


def previous_records(
    history: list[dict] | None, ckpt: Checkpoint, n_layers: int, classification: bool
) -> list[dict]:
    """The records of epochs ``1..ckpt.epoch`` for a resumed run."""
    if history is None:
        if "history" not in ckpt.meta:
            raise ValueError(
                f"resuming after epoch {ckpt.epoch} needs history=the records of epochs "
                f"1..{ckpt.epoch} (checkpoints do not hold them)"
            )
        return list(ckpt.meta["history"])  # a version-1 checkpoint
    records = [
        dict(r) if "grad_norm" in r else unflatten_record(r, n_layers, classification)
        for r in history
    ]
    if [r.get("epoch") for r in records] != list(range(1, ckpt.epoch + 1)):
        raise ValueError(
            f"history must hold the records of epochs 1..{ckpt.epoch}, in order, "
            f"for a checkpoint taken after epoch {ckpt.epoch}"
        )
    return records


def finite_or_none(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def improves(value: float | None, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """The best-epoch rule: does ``value`` beat ``best`` by more than ``min_delta``?

    ``mode`` is ``"min"`` or ``"max"``; None is never better, and anything beats
    no best yet. The service ranks epochs and trials by this same rule.
    """
    if value is None:
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class BestTracker:
    """Best epoch by a metric; with ``patience`` it is also early stopping."""

    def __init__(self, metric: str, mode: str, min_delta: float = 0.0, patience: int | None = None):
        self.metric, self.mode, self.min_delta, self.patience = metric, mode, min_delta, patience
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0

    def update(self, epoch: int, value: float | None) -> bool:
        """Record ``value``; return True if it improved on the best."""
        if value is None:
            return False
        better = improves(value, self.best, self.mode, self.min_delta)
        if better:
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.wait >= self.patience

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]


def epoch_record(
    epoch: int,
    classification: bool,
    losses: tuple[float | None, float | None],
    accuracies: tuple[float | None, float | None],
    lr: float,
    grad_norms: list[float],
    net: Network,
    active: list[np.ndarray | None],
    seconds: float,
) -> dict:
    """The record of one epoch: ``losses`` and ``accuracies`` are (train, val)
    pairs; ``active`` the per-layer units that fired (None: not a ReLU layer or
    not measured); ``grad_norms`` empty when the epoch diverged before them."""
    record: dict = {
        "epoch": epoch,
        "train_loss": finite_or_none(losses[0]),
        "val_loss": finite_or_none(losses[1]),
    }
    if classification:
        record["train_accuracy"], record["val_accuracy"] = accuracies
    record["learning_rate"] = lr
    record["grad_norm"] = [finite_or_none(g) for g in grad_norms] or [None] * len(net.layers)
    record["weight_norm"] = [finite_or_none(w) for w in net.weight_norms()]
    record["dead_relu_fraction"] = [
        float(1.0 - a.mean()) if a is not None else None for a in active
    ]
    record["seconds"] = seconds
    return record
