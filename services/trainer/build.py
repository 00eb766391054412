"""What a spec builds: its dataset, its network, and the run's random generators.

``load_dataset(dataset_spec)`` turns a ``dataset`` spec into a ``Dataset``
(generated, bundled or inline rows, split and standardized);
``build_network(spec, dataset)`` the network the architecture describes,
initialized from the spec's seed; ``generators(seed)`` the run's two random
streams (initial weights; shuffling and dropout). Here, and not in ``data`` or
``network``, because these read the parsed spec and ``spec`` itself reads the
dataset catalogue in ``data``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .data import (
    CLASSIFICATION,
    DATASETS,
    REGRESSION,
    Dataset,
    infer_task,
    stratified_split,
)
from .initializers import get_initializer
from .layers import Dense
from .losses import get_loss
from .network import Network
from .spec import DatasetSpec, SpecError, parse_dataset, parse_spec, resolve_head


def load_dataset(dataset_spec) -> Dataset:
    """Build the dataset described by a ``dataset`` spec (dict or ``DatasetSpec``).

    Parameters
    ----------
    dataset_spec : dict or spec.DatasetSpec
        ``name``, ``validation_split``, ``seed``, ``standardize``,
        ``standardize_targets`` and the dataset's own options (``n_samples``,
        ``noise``, ``arms``, ...; ``X``, ``y``, ``task`` for ``arrays``).
    """
    ds = dataset_spec if isinstance(dataset_spec, DatasetSpec) else parse_dataset(dataset_spec)
    rng = np.random.default_rng(ds.seed)
    info = DATASETS[ds.name]
    if ds.name == "uploaded":
        raise SpecError(
            "dataset.name", "the rows of an 'uploaded' dataset come as fit's data (load_uploaded)"
        )
    if ds.name == "arrays":
        X = np.asarray(ds.options["X"], dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        y = np.asarray(ds.options["y"])
        task = ds.options.get("task") or infer_task(y)
    else:
        assert info.make is not None
        X, y = info.make(rng, **ds.options)
        task = info.task

    classes = None
    n_classes = None
    if task == CLASSIFICATION:
        classes_arr, y = np.unique(y, return_inverse=True)
        y = y.reshape(-1).astype(np.int64)
        classes = classes_arr.tolist()
        n_classes = len(classes)
    else:
        y = np.asarray(y, dtype=np.float64)
    return _split(ds, rng, X, y, task, n_classes, classes)


def load_uploaded(
    dataset_spec, X: np.ndarray, y: np.ndarray, classes: list | None = None
) -> Dataset:
    """Split and standardize rows kept outside the spec, as ``load_dataset`` does for
    inline ``arrays`` with the same rows (bit for bit), without checking them again.

    Parameters
    ----------
    dataset_spec : dict or spec.DatasetSpec
        An ``uploaded`` dataset spec (its split and standardization options, its facts).
    X : ndarray, shape (n, n_features), float64
        Checked already (finite); it is not modified.
    y : ndarray, shape (n,) int64 class indices ``0..k-1`` (classification), or
        (n,) / (n, d) float64 targets (regression)
    classes : list, optional
        The original label of each class index.
    """
    ds = dataset_spec if isinstance(dataset_spec, DatasetSpec) else parse_dataset(dataset_spec)
    if ds.name != "uploaded":
        raise SpecError("dataset.name", f"load_uploaded takes 'uploaded' data, got {ds.name!r}")
    task = ds.options["task"]
    n_classes = len(ds.options["class_counts"]) if task == CLASSIFICATION else None
    expected = (ds.options["n_rows"], ds.options["n_features"])
    if X.shape != expected or len(y) != expected[0]:
        raise ValueError(f"the rows have shape {X.shape}, the spec says {expected}")
    rng = np.random.default_rng(ds.seed)
    return _split(ds, rng, X, y, task, n_classes, classes)


def _split(ds, rng, X, y, task, n_classes, classes) -> Dataset:
    """Split ``X, y`` (y encoded) by ``ds``'s options and standardize them."""
    train_idx, val_idx = stratified_split(y, ds.validation_split, rng, task == CLASSIFICATION)
    if len(train_idx) == 0:
        raise SpecError(
            "dataset.validation_split",
            f"{ds.validation_split} of {len(y)} rows leaves no training rows",
        )
    X_train, X_val, y_train, y_val = X[train_idx], X[val_idx], y[train_idx], y[val_idx]

    data = Dataset(X_train, y_train, X_val, y_val, task, n_classes, ds.name, classes)
    if ds.standardize:
        mean, std = _standardize(X_train)
        data.X_train = (X_train - mean) / std
        data.X_val = (X_val - mean) / std
        data.feature_mean, data.feature_std = mean, std
    if task == REGRESSION and ds.standardize_targets:
        mean, std = _standardize(y_train)
        data.y_train = (y_train - mean) / std
        data.y_val = (y_val - mean) / std
        data.target_mean, data.target_std = mean, std
    return data


def build_network(spec, dataset: Dataset, rng: np.random.Generator | None = None) -> Network:
    """Build and initialize the network a spec describes for ``dataset``.

    Parameters
    ----------
    spec : dict or Spec
    dataset : Dataset
        Gives the input width, the task and the number of classes / targets.
    rng : Generator, optional
        Draws the initial weights; by default the spec seed's init stream
        (``generators(seed)[0]``).
    """
    spec = parse_spec(spec)
    arch, hp = spec.architecture, spec.hyperparameters
    output_activation, loss_name = _head_for(spec, dataset)
    loss = get_loss(loss_name)
    dtype = np.dtype(hp.dtype)
    n_out = dataset.n_outputs
    if dataset.task == CLASSIFICATION and output_activation == "sigmoid" and n_out == 2:
        n_out = 1  # binary: one logit
    sizes = [dataset.n_features] + [layer.units for layer in arch.layers] + [int(n_out)]
    acts = [layer.activation for layer in arch.layers]
    acts.append("linear" if loss.fused_activation else output_activation)
    if rng is None:
        rng = generators(hp.seed)[0]
    init = get_initializer(arch.initializer)
    layers = []
    for i, act in enumerate(acts):
        hidden = i < len(acts) - 1
        layer = Dense(sizes[i], sizes[i + 1], act, hp.dropout if hidden else 0.0, dtype)
        layer.params["W"][...] = init(rng, sizes[i], sizes[i + 1], arch.init_std)
        layers.append(layer)
    return Network(layers, loss, output_activation, dataset.task)


def _head_for(spec, dataset: Dataset) -> tuple[str, str]:
    """Output activation and loss; re-inferred when the data is not the spec's own."""
    out = spec.architecture.output_activation
    loss = spec.hyperparameters.loss
    if (dataset.task, dataset.n_classes) != (spec.task, spec.n_classes):
        out_inferred, loss_inferred = spec.head_inferred
        out, loss = resolve_head(
            dataset.task,
            dataset.n_classes,
            "" if out_inferred else out,
            "" if loss_inferred else loss,
        )
    return out, loss


def generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """``(init, train)`` generators, independent streams of one seed.

    ``init`` draws the initial weights; ``train`` draws the per-epoch
    permutations and the dropout masks (its state is checkpointed).
    """
    init_ss, train_ss = np.random.SeedSequence(seed).spawn(2)
    return np.random.Generator(np.random.PCG64(init_ss)), np.random.Generator(
        np.random.PCG64(train_ss)
    )


def _standardize(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The columns' mean and standard deviation (1 where a column is constant)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    return mean, np.where(std == 0, 1.0, std)


def with_ones_column(X: np.ndarray, net: Network) -> np.ndarray:
    """``[X, 1]`` in the network's dtype: rows with a column of ones appended."""
    out = np.ones((len(X), net.layers[0].n_in + 1), net.dtype)
    out[:, :-1] = X
    return out


def as_indices_of(data: Dataset, width: int) -> Dataset:
    """``data`` whose encoded labels are integer class indices of a network with
    ``width`` classes, decoded back to them (``dataset_from_arrays`` encodes a
    subset such as {1, 2} as {0, 1}); any other ``data`` as it is."""
    classes = np.asarray(data.classes)
    if classes.dtype.kind not in "iu" or classes.min() < 0 or classes.max() >= width:
        return data
    return dataclasses.replace(
        data,
        y_train=classes[data.y_train],
        y_val=classes[data.y_val],
        n_classes=width,
        classes=None,
    )


def as_dataset(data) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, dict):
        return load_dataset(data)
    raise TypeError(f"data must be a Dataset or a dataset spec dict, got {type(data).__name__}")
