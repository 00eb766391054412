"""Datasets: synthetic generators, scikit-learn's bundled sets, inline arrays, and
``uploaded`` data, whose rows the caller hands to ``fit`` (``build.load_uploaded``) and
whose spec carries only what is known of it (id, task, shape, class sizes).

``build.load_dataset(dataset_spec)`` returns a ``Dataset`` with ``X_train,
y_train, X_val, y_val``. Classification labels are integers ``0..k-1``; regression
targets are floats of shape ``(n,)`` or ``(n, d)``. The split is stratified
for classification, and features (and regression targets) are standardized
with the training part's statistics only. Everything random comes from
``np.random.default_rng(dataset.seed)``; scikit-learn is imported only to read
its bundled files (nothing is downloaded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CLASSIFICATION, REGRESSION = "classification", "regression"


@dataclass
class Dataset:
    """Train/validation arrays and what the network needs to know about them.

    Attributes
    ----------
    X_train, X_val : ndarray, shape (n, n_features), float64
    y_train, y_val : ndarray, shape (n,) int64 labels, or (n,) / (n, d) float64 targets
    task : "classification" or "regression"
    n_classes : int or None
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    task: str
    n_classes: int | None = None
    name: str = "data"
    classes: list | None = None
    feature_mean: np.ndarray | None = None
    feature_std: np.ndarray | None = None
    target_mean: np.ndarray | None = None
    target_std: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_outputs(self) -> int:
        """Width of the output layer (before the binary / multi-class choice)."""
        if self.task == CLASSIFICATION:
            return int(self.n_classes or 0)
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])

    def summary(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "n_classes": self.n_classes,
            "n_features": self.n_features,
            "n_train": int(len(self.X_train)),
            "n_val": int(len(self.X_val)),
        }


# --- synthetic generators: (rng, **options) -> (X, y) ---------------------------


def make_xor(rng, n_samples=400, noise=0.15):
    """The four corners of the unit square, label = x0 XOR x1, plus Gaussian noise.

    With ``n_samples=4`` and ``noise=0`` this is the XOR truth table.
    """
    corners = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    idx = np.arange(n_samples) % 4
    X = corners[idx] + noise * rng.standard_normal((n_samples, 2))
    y = np.array([0, 1, 1, 0])[idx]
    return X, y


def make_spirals(rng, n_samples=300, noise=0.2, arms=3):
    """``arms`` interleaved spiral arms, one class each (the cs231n spiral)."""
    per = np.full(arms, n_samples // arms)
    per[: n_samples % arms] += 1
    X, y = [], []
    for k, m in enumerate(per):
        r = np.linspace(0.0, 1.0, m)
        t = np.linspace(k * 4.0, (k + 1) * 4.0, m) * (3.0 / arms) + noise * rng.standard_normal(m)
        X.append(np.c_[r * np.sin(t), r * np.cos(t)])
        y.append(np.full(m, k))
    return np.concatenate(X), np.concatenate(y)


def make_moons(rng, n_samples=400, noise=0.1):
    """Two interleaving half circles (as scikit-learn's ``make_moons``)."""
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out = np.linspace(0, np.pi, n_out)
    t_in = np.linspace(0, np.pi, n_in)
    X = np.r_[np.c_[np.cos(t_out), np.sin(t_out)], np.c_[1 - np.cos(t_in), 0.5 - np.sin(t_in)]]
    y = np.r_[np.zeros(n_out, int), np.ones(n_in, int)]
    return X + noise * rng.standard_normal(X.shape), y


def make_circles(rng, n_samples=400, noise=0.05, factor=0.5):
    """A small circle inside a large one (as scikit-learn's ``make_circles``)."""
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    X = np.r_[np.c_[np.cos(t_out), np.sin(t_out)], factor * np.c_[np.cos(t_in), np.sin(t_in)]]
    y = np.r_[np.zeros(n_out, int), np.ones(n_in, int)]
    return X + noise * rng.standard_normal(X.shape), y


def make_blobs(rng, n_samples=400, noise=1.0, centers=3, n_features=2):
    """Isotropic Gaussian clusters (std ``noise``) around centers drawn in [-10, 10]."""
    C = rng.uniform(-10.0, 10.0, size=(centers, n_features))
    y = np.arange(n_samples) % centers
    return C[y] + noise * rng.standard_normal((n_samples, n_features)), y


def make_sine(rng, n_samples=400, noise=0.1):
    """Regression: ``y = sin(x) + noise * N(0, 1)`` for ``x ~ U(-pi, pi)``."""
    X = rng.uniform(-np.pi, np.pi, size=(n_samples, 1))
    return X, np.sin(X[:, 0]) + noise * rng.standard_normal(n_samples)


def _sklearn(loader_name: str):
    def load(rng):
        from sklearn import datasets  # late: bundled files only, imported on demand

        bunch = getattr(datasets, loader_name)()
        return np.asarray(bunch.data, np.float64), np.asarray(bunch.target)

    load.__name__ = loader_name
    return load


@dataclass(frozen=True)
class DatasetInfo:
    make: Callable | None  # None for "arrays": the data comes with the spec
    task: str
    options: dict[str, Any]  # accepted options and their defaults


_SYNTH_N = {"n_samples": 400}
DATASETS: dict[str, DatasetInfo] = {
    "xor": DatasetInfo(make_xor, CLASSIFICATION, {**_SYNTH_N, "noise": 0.15}),
    "spirals": DatasetInfo(
        make_spirals, CLASSIFICATION, {"n_samples": 300, "noise": 0.2, "arms": 3}
    ),
    "moons": DatasetInfo(make_moons, CLASSIFICATION, {**_SYNTH_N, "noise": 0.1}),
    "circles": DatasetInfo(
        make_circles, CLASSIFICATION, {**_SYNTH_N, "noise": 0.05, "factor": 0.5}
    ),
    "blobs": DatasetInfo(
        make_blobs, CLASSIFICATION, {**_SYNTH_N, "noise": 1.0, "centers": 3, "n_features": 2}
    ),
    "sine": DatasetInfo(make_sine, REGRESSION, {**_SYNTH_N, "noise": 0.1}),
    "digits": DatasetInfo(_sklearn("load_digits"), CLASSIFICATION, {}),
    "iris": DatasetInfo(_sklearn("load_iris"), CLASSIFICATION, {}),
    "wine": DatasetInfo(_sklearn("load_wine"), CLASSIFICATION, {}),
    "breast_cancer": DatasetInfo(_sklearn("load_breast_cancer"), CLASSIFICATION, {}),
    "diabetes": DatasetInfo(_sklearn("load_diabetes"), REGRESSION, {}),
    "arrays": DatasetInfo(None, "", {"X": None, "y": None, "task": None}),
    # Rows kept by the caller (a service's stored dataset); the spec holds its facts.
    "uploaded": DatasetInfo(
        None,
        "",
        {
            "id": None,
            "sha256": None,
            "task": None,
            "n_rows": None,
            "n_features": None,
            "class_counts": None,
            "n_targets": None,
        },
    ),
}


def dataset_task(name: str, options: dict) -> tuple[str, int | None]:
    """``(task, n_classes)`` known without loading the data (n_classes may be None)."""
    if name == "arrays":
        y = np.asarray(options["y"])
        task = options.get("task") or infer_task(y)
        return task, (len(np.unique(y)) if task == CLASSIFICATION else None)
    if name == "uploaded":
        counts = options.get("class_counts")
        return options["task"], (len(counts) if counts is not None else None)
    info = DATASETS[name]
    n_classes = {
        "xor": 2,
        "moons": 2,
        "circles": 2,
        "breast_cancer": 2,
        "iris": 3,
        "wine": 3,
        "digits": 10,
        "spirals": options.get("arms"),
        "blobs": options.get("centers"),
    }.get(name)
    return info.task, n_classes


def infer_task(y: np.ndarray) -> str:
    """Integer, boolean or string labels mean classification; floats mean regression."""
    return CLASSIFICATION if y.dtype.kind in "biuUSO" else REGRESSION


def _n_val(group_size: int, validation_split: float) -> int:
    return int(round(validation_split * group_size))


def _modulo_counts(n: int, k: int) -> list[int]:
    """How many of ``arange(n) % k`` equal each residue."""
    return [n // k + (1 if r < n % k else 0) for r in range(k)]


#: The class sizes of scikit-learn's bundled sets (one group: regression).
_BUNDLED_GROUPS = {
    "iris": [50, 50, 50],
    "wine": [59, 71, 48],
    "breast_cancer": [212, 357],
    "digits": [178, 182, 177, 183, 181, 182, 181, 179, 174, 180],
    "diabetes": [442],
}


#: ``(n_samples, n_features)`` of scikit-learn's bundled sets, known without loading them.
BUNDLED_SHAPES = {
    "iris": (150, 4),
    "wine": (178, 13),
    "breast_cancer": (569, 30),
    "digits": (1797, 64),
    "diabetes": (442, 10),
}


def dataset_shape(name: str, options: dict) -> tuple[int, int]:
    """``(n_samples, n_features)`` of a dataset, from its spec alone (no data is made)."""
    if name in BUNDLED_SHAPES:
        return BUNDLED_SHAPES[name]
    if name == "arrays":
        X = options.get("X") or []
        return len(X), (int(np.size(X[0])) if len(X) else 1) or 1
    if name == "uploaded":
        return int(options["n_rows"]), int(options["n_features"])
    defaults = DATASETS[name].options
    n = int(options.get("n_samples", defaults.get("n_samples", 0)))
    n_features = (
        1 if name == "sine" else int(options.get("n_features", defaults.get("n_features", 2)))
    )
    return n, n_features


def generated_group_sizes(name: str, options: dict) -> list[int] | None:
    """The sizes of the groups a named set's split is stratified by (its
    classes; one group for regression), from its options alone; None for
    inline data."""
    if name in _BUNDLED_GROUPS:
        return _BUNDLED_GROUPS[name]
    if name == "uploaded" and options.get("n_rows") is not None:
        return list(options.get("class_counts") or [int(options["n_rows"])])
    if name not in DATASETS or DATASETS[name].make is None:
        return None
    n = int(options.get("n_samples", DATASETS[name].options["n_samples"]))
    if name == "xor":  # corners 0..3 of arange(n) % 4; labels 0, 1, 1, 0
        c = _modulo_counts(n, 4)
        return [c[0] + c[3], c[1] + c[2]]
    if name in ("moons", "circles"):
        return [n // 2, n - n // 2]
    if name == "spirals":
        return _modulo_counts(n, options.get("arms", 3))  # n // arms, the first n % arms + 1
    if name == "blobs":
        return _modulo_counts(n, options.get("centers", 3))
    if name == "sine":
        return [n]
    return None


def validation_rows(name: str, options: dict, validation_split: float) -> int | None:
    """How many validation rows the split of a dataset gives, from its spec alone
    (``options``: a named set's, or inline ``y`` and ``task``); None if unknown."""
    if validation_split <= 0:
        return 0
    if name == "arrays" and options.get("y") is not None:
        y = np.asarray(options["y"])
        task = options.get("task") or infer_task(y)
        return split_sizes(y, validation_split, task == CLASSIFICATION)[1]
    sizes = generated_group_sizes(name, options)
    if sizes is None:
        return None
    return sum(_n_val(size, validation_split) for size in sizes)


def split_sizes(y: np.ndarray, validation_split: float, stratify: bool) -> tuple[int, int]:
    """``(n_train, n_val)`` that ``stratified_split`` gives, without drawing it."""
    n = len(y)
    if validation_split <= 0:
        return n, 0
    groups = np.unique(y, return_counts=True)[1] if stratify else [n]
    n_val = sum(_n_val(int(size), validation_split) for size in groups)
    return n - n_val, n_val


def stratified_split(
    y: np.ndarray, validation_split: float, rng: np.random.Generator, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)``; with ``stratify`` each class is split in proportion."""
    n = len(y)
    if validation_split <= 0:
        return np.arange(n), np.arange(0)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(n)]
    val = []
    for idx in groups:
        idx = rng.permutation(idx)
        val.append(idx[: _n_val(len(idx), validation_split)])
    val_idx = np.sort(np.concatenate(val))
    train_mask = np.ones(n, bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


def dataset_from_arrays(
    X_train, y_train, X_val=None, y_val=None, *, task: str | None = None, name: str = "arrays"
) -> Dataset:
    """Wrap ready-made arrays (no split, no standardization) as a ``Dataset``.

    Integer labels that look like class indices (0 among them, the largest
    below twice their number: ``{0, 1, 2}``, or a subset ``{0, 2}`` of a
    network's classes) are kept as they are, ``n_classes`` the largest + 1;
    any others (``{1, 2}``, ``{-1, 1}``, ids, years, strings, floats,
    booleans) are encoded as ``0..k-1`` in sorted order, as ``load_dataset``
    does, and ``classes`` keeps the originals.
    """
    X_train = np.asarray(X_train, np.float64)
    y_train = np.asarray(y_train)
    task = task or infer_task(y_train)
    if X_val is None:
        X_val = np.empty((0, X_train.shape[1]))
        y_val = np.empty((0,) + y_train.shape[1:], y_train.dtype)
    X_val, y_val = np.asarray(X_val, np.float64), np.asarray(y_val)
    for part, X, y in (("train", X_train, y_train), ("val", X_val, y_val)):
        if X.ndim != 2 or len(y) != len(X):
            raise ValueError(
                f"X_{part} must be 2-D with one row per entry of y_{part}, "
                f"got shapes {X.shape} and {y.shape}"
            )
    if X_val.shape[1] != X_train.shape[1]:
        raise ValueError(f"X_val has {X_val.shape[1]} columns, X_train {X_train.shape[1]}")
    n_classes = classes = None
    if task == CLASSIFICATION:
        if y_train.ndim != 1 or y_val.ndim != 1:
            raise ValueError("class labels must be one per row (1-D y_train and y_val)")
        labels = np.concatenate([y_train, y_val])
        distinct = np.unique(labels)
        if (
            labels.dtype.kind in "iu"
            and len(distinct)
            and distinct[0] == 0
            and distinct[-1] < 2 * len(distinct)
        ):  # class indices
            y_train, y_val = y_train.astype(np.int64), y_val.astype(np.int64)
            n_classes = int(labels.max(initial=0)) + 1
        else:
            classes_arr, codes = np.unique(labels, return_inverse=True)
            codes = codes.reshape(-1).astype(np.int64)
            y_train, y_val = codes[: len(y_train)], codes[len(y_train) :]
            n_classes, classes = len(classes_arr), classes_arr.tolist()
    else:
        y_train, y_val = y_train.astype(np.float64), y_val.astype(np.float64)
    return Dataset(X_train, y_train, X_val, y_val, task, n_classes, name, classes)
