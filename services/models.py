"""A job's trained network out: its weights as an ``.npz`` for users, and predictions
for rows in the data's raw units, by the trainer's own forward pass.

What a prediction needs besides the weights (the training set's standardization
statistics and the class labels as the user gave them) is stored with the final
weights when a job finishes (:func:`weights_blob`: ``data.*`` entries beside the
network's own in ``job_weights``). Weights stored without them (before they were
kept, or taken from a checkpoint by ``services.jobs.ending``) get them recomputed
from the job's dataset reference: the split and standardization are deterministic.

The download (:meth:`TrainedModel.npz_bytes`), whose keys the client reads::

    W1..Wn, b1..bn   layer i (1 = the first after the input): (fan_in, fan_out), (fan_out,)
    spec             0-d unicode: the job's spec as JSON
    architecture     0-d unicode: JSON of sizes, activations, output_activation, loss,
                     task, dtype (what a forward pass needs)
    feature_mean, feature_std   when the training standardized the features
    target_mean, target_std     regression with standardized targets
    classes          classification: the labels as the user gave them
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.config import Settings
from services.datasets import fit_data
from services.db.models import Job, JobWeights
from services.specs.errors import SpecValidationError
from services.trainer import Dataset, Network
from services.trainer.data import CLASSIFICATION

#: the prefix of the statistics' entries in a stored weights blob
STATS_PREFIX = "data."
STAT_NAMES = ("feature_mean", "feature_std", "target_mean", "target_std")


class NoWeightsError(LookupError):
    """The job has no final weights (yet)."""


class DataGoneError(LookupError):
    """The weights hold no statistics and the job's dataset, to recompute them, is gone."""


@dataclass(frozen=True)
class DataStats:
    """What turns raw rows into the network's inputs and its outputs back into answers."""

    feature_mean: np.ndarray | None = None  # (n_features,)
    feature_std: np.ndarray | None = None
    target_mean: np.ndarray | None = None  # () or (n_targets,)
    target_std: np.ndarray | None = None
    classes: list[Any] | None = None  # the label of each class index

    @classmethod
    def of(cls, data: Dataset) -> DataStats:
        """The statistics the training of ``data`` used (``Dataset`` of the trainer)."""
        return cls(
            data.feature_mean,
            data.feature_std,
            data.target_mean,
            data.target_std,
            None if data.classes is None else list(data.classes),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The entries kept in a weights blob (``data.<name>``)."""
        out = {
            STATS_PREFIX + name: np.asarray(getattr(self, name), np.float64)
            for name in STAT_NAMES
            if getattr(self, name) is not None
        }
        meta = {"classes": self.classes}
        out[STATS_PREFIX + "meta"] = np.array(json.dumps(meta))
        return out

    @classmethod
    def from_npz(cls, z: Any) -> DataStats | None:
        """The statistics in an opened weights blob; None if it holds none."""
        if STATS_PREFIX + "meta" not in z.files:
            return None
        meta = json.loads(str(z[STATS_PREFIX + "meta"]))
        found = {
            name: np.array(z[STATS_PREFIX + name])
            for name in STAT_NAMES
            if STATS_PREFIX + name in z.files
        }
        return cls(**found, classes=meta.get("classes"))


def weights_blob(network: Network, data: Dataset | None) -> bytes:
    """``network.to_npz_bytes()`` with ``data``'s statistics and labels added (as
    ``data.*`` entries, which ``Network.from_npz_bytes`` does not read)."""
    blob = network.to_npz_bytes()
    if data is None:
        return blob
    buf = io.BytesIO(blob)
    with zipfile.ZipFile(buf, "a") as archive:  # what np.savez writes: one .npy a name
        for name, array in DataStats.of(data).arrays().items():
            with archive.open(name + ".npy", "w") as entry:
                np.lib.format.write_array(entry, array, allow_pickle=False)
    return buf.getvalue()


@dataclass(frozen=True)
class Prediction:
    task: str
    predictions: list[Any]  # labels, numbers, or a list of numbers a row (several targets)
    probabilities: list[list[float]] | None
    classes: list[Any] | None


@dataclass
class TrainedModel:
    """A job's network with what its predictions need."""

    spec: dict[str, Any]
    network: Network
    stats: DataStats

    @property
    def task(self) -> str:
        return self.network.task

    @property
    def n_features(self) -> int:
        return self.network.layers[0].n_in

    @property
    def classes(self) -> list[Any] | None:
        """The labels as the user gave them (class indices when none were kept)."""
        if self.task != CLASSIFICATION:
            return None
        if self.stats.classes:
            return list(self.stats.classes)
        return list(range(max(self.network.layers[-1].n_out, 2)))

    def npz_bytes(self) -> bytes:
        """The download: see the module's docstring for its keys."""
        arrays: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.network.layers, start=1):
            arrays[f"W{i}"] = layer.params["W"]
            arrays[f"b{i}"] = layer.params["b"]
        arrays["spec"] = np.array(json.dumps(self.spec, sort_keys=True))
        arrays["architecture"] = np.array(json.dumps(self.network.architecture()))
        for name in STAT_NAMES:
            value = getattr(self.stats, name)
            if value is not None:
                arrays[name] = np.asarray(value, np.float64)
        if self.classes is not None:
            arrays["classes"] = np.asarray(self.classes)
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub mistypes **kwds
        return buf.getvalue()

    def outputs(self, rows: Any) -> np.ndarray:
        """The network's outputs (probabilities, or standardized targets) for raw rows,
        as ``TrainResult.predict`` computes them: standardized in float64, then the
        network's ``predict`` (its dtype, in chunks)."""
        X, _ = self.network.as_rows(rows, np.float64)
        if self.stats.feature_mean is not None and self.stats.feature_std is not None:
            X = (X - self.stats.feature_mean) / self.stats.feature_std
        return self.network.predict(X)

    def predict(self, rows: Any) -> Prediction:
        """Labels and class probabilities, or targets in the data's units, for raw
        ``rows`` of shape (n, n_features); the same numbers as ``TrainResult.predict``."""
        out = self.outputs(rows)  # (n, n_out)
        if self.task == CLASSIFICATION:
            classes = self.classes
            assert classes is not None
            if out.shape[1] == 1:  # one sigmoid unit: P(class 1)
                idx = (out[:, 0] > 0.5).astype(np.int64)
                proba = np.concatenate([1 - out, out], axis=1)
            else:
                idx, proba = out.argmax(axis=1), out
            # outputs that are not finite (extreme inputs, a blown-up network) name no class
            finite = np.isfinite(out).all(axis=1).tolist()
            labels = [
                classes[i] if ok else None for i, ok in zip(idx.tolist(), finite, strict=True)
            ]
            return Prediction(CLASSIFICATION, labels, proba.tolist(), classes)
        values = out.astype(np.float64)
        if self.stats.target_mean is not None and self.stats.target_std is not None:
            values = values * self.stats.target_std + self.stats.target_mean
        if values.shape[1] == 1:  # one target a row: a number
            return Prediction(self.task, values[:, 0].tolist(), None, None)
        return Prediction(self.task, values.tolist(), None, None)


def trained_model(
    spec: dict[str, Any], blob: bytes, recompute: Callable[[], Dataset] | None = None
) -> TrainedModel:
    """The model of a stored weights blob; ``recompute`` gives the job's data when the
    blob does not hold its statistics (None: none are applied)."""
    network = Network.from_npz_bytes(blob)
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        stats = DataStats.from_npz(z)
    if stats is None:
        stats = DataStats.of(recompute()) if recompute is not None else DataStats()
    return TrainedModel(spec, network, stats)


def check_rows(rows: list[list[float]], n_features: int) -> np.ndarray:
    """``rows`` as a (n, n_features) float64 array; a 422 naming the rows of another width."""
    bad = [i for i, row in enumerate(rows) if len(row) != n_features]
    if bad:
        details = [
            {"loc": f"rows.{i}", "msg": f"expected {n_features} features, got {len(rows[i])}"}
            for i in bad[:5]
        ]
        raise SpecValidationError(
            f"every row must have the job's {n_features} input features", details
        )
    return np.asarray(rows, np.float64).reshape(len(rows), n_features)


class ModelCache:
    """Trained models by (job id, weights epoch and time): a prediction request does
    not read and parse the weights again, nor recompute statistics. The least recently
    used go first, past ``max_entries`` or ``max_bytes`` of parameters."""

    def __init__(self, max_entries: int = 32, max_bytes: int = 256 << 20):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[tuple[Any, ...], TrainedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], load: Callable[[], TrainedModel]) -> TrainedModel:
        with self._lock:
            model = self._entries.get(key)
            if model is not None:
                self._entries.move_to_end(key)
                return model
        model = load()
        with self._lock:
            self._entries[key] = model
            while len(self._entries) > self.max_entries or self._nbytes() > self.max_bytes:
                self._entries.popitem(last=False)
        return model

    def _nbytes(self) -> int:
        return sum(_nbytes(m) for m in self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _nbytes(model: Any) -> int:
    network = getattr(model, "network", None)
    return int(network.params_flat.nbytes) if network is not None else 0


#: this process's models
MODELS = ModelCache()


def job_model(
    session: Session,
    job: Job,
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    cache: ModelCache = MODELS,
) -> TrainedModel:
    """The trained model of ``job`` (cached by its weights' epoch and time). Raises
    NoWeightsError, or DataGoneError when statistics must be recomputed from a
    dataset that was deleted."""
    found = session.execute(
        select(JobWeights.epoch, JobWeights.created_at).where(JobWeights.job_id == job.id)
    ).one_or_none()
    if found is None:
        raise NoWeightsError(f"job {job.id} has no final weights")
    spec = job.spec

    def recompute() -> Dataset:
        try:
            return fit_data(spec, sessions, settings)
        except LookupError as err:
            raise DataGoneError(
                f"the weights of job {job.id} were stored without their data's statistics, "
                "and its dataset, to recompute them, was deleted"
            ) from err

    def load() -> TrainedModel:
        blob = session.scalar(select(JobWeights.data).where(JobWeights.job_id == job.id))
        if blob is None:
            raise NoWeightsError(f"job {job.id} has no final weights")
        return trained_model(spec, bytes(blob), recompute)

    return cache.get((job.id, found.epoch, found.created_at), load)
