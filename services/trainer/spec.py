"""The job spec: validation, defaults, and the normalized record of a run.

``parse_spec(d)`` checks a plain dict completely before anything is built and
returns a ``Spec`` whose ``to_dict()`` is the normalized, JSON-serializable
spec with every default filled in. Any problem raises ``SpecError`` (a
``ValueError``) whose ``loc`` is the dotted path of the field
(``"hyperparameters.learning_rate"``, ``"architecture.layers.0.units"``) and
whose message names the allowed values. Unknown fields are errors, so a typo
never silently falls back to a default.

The normalized dataclasses (``Spec``, ``HyperParameters``, ...) live in
``spec_types``, the readers of one typed field (and ``SpecError``) in
``spec_fields``; both are importable from here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
from .data import (
    CLASSIFICATION,
    DATASETS,
    REGRESSION,
    dataset_task,
    infer_task,
    split_sizes,
    validation_rows,
)
from .initializers import INITIALIZERS
from .losses import LOSSES
from .optimizers import OPTIMIZERS
from .schedules import SCHEDULE_OPTIONS
from .spec_fields import (
    SpecError,
    join_loc,
    read_bool,
    read_choice,
    read_choice_or_none,
    read_int,
    read_int_or_none,
    read_number,
    read_number_or_none,
    read_section,
)
from .spec_types import (
    ArchitectureSpec,
    DatasetSpec,
    EarlyStoppingSpec,
    HyperParameters,
    LayerSpec,
    Spec,
)

MAX_UNITS = 65_536
MAX_LAYERS = 64
MAX_EPOCHS = 1_000_000
MAX_SAMPLES = 10_000_000
DTYPES = ("float32", "float64")
TRAIN_METRICS = ("after_epoch", "running")
ES_METRICS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")


# --- sections ---------------------------------------------------------------------

_DATASET_COMMON = ("name", "validation_split", "seed", "standardize", "standardize_targets")


def parse_dataset(d: Any, loc: str = "dataset") -> DatasetSpec:
    """Validate a ``dataset`` section (see ``data.DATASETS`` for each one's options)."""
    if not isinstance(d, dict):
        raise SpecError(loc, f"must be an object, got {type(d).__name__}")
    name = read_choice(d, loc, "name", tuple(DATASETS))
    info = DATASETS[name]
    read_section(d, loc, set(_DATASET_COMMON) | set(info.options))
    ds = DatasetSpec(
        name=name,
        validation_split=read_number(d, loc, "validation_split", 0.2, ge=0.0, lt=1.0),
        seed=read_int(d, loc, "seed", 0, ge=0, le=2**63 - 1),
        standardize=read_bool(d, loc, "standardize", True),
        standardize_targets=read_bool(d, loc, "standardize_targets", True),
    )
    opts: dict[str, Any] = {}
    if name == "arrays":
        opts["task"] = read_choice_or_none(d, loc, "task", (CLASSIFICATION, REGRESSION), None)
        opts["X"], opts["y"] = _arrays(d, loc, opts["task"])
        task = opts["task"] or infer_task(opts["y"])
        n_train, _ = split_sizes(opts["y"], ds.validation_split, task == CLASSIFICATION)
        if n_train == 0:
            raise SpecError(
                f"{loc}.validation_split",
                f"{ds.validation_split} of {len(opts['y'])} rows leaves no training rows",
            )
    if name == "uploaded":
        opts.update(_uploaded(d, loc))
        n_train = opts["n_rows"] - sum(
            int(round(ds.validation_split * size))
            for size in (opts["class_counts"] or [opts["n_rows"]])
        )
        if n_train <= 0:
            raise SpecError(
                f"{loc}.validation_split",
                f"{ds.validation_split} of {opts['n_rows']} rows leaves no training rows",
            )
    for key, default in info.options.items():
        if key in ("X", "y", "task") or name == "uploaded":
            continue
        if key == "n_samples":
            opts[key] = read_int(d, loc, key, default, ge=4, le=MAX_SAMPLES)
        elif key == "noise":
            opts[key] = read_number(d, loc, key, default, ge=0.0, le=100.0)
        elif key == "factor":
            opts[key] = read_number(d, loc, key, default, gt=0.0, lt=1.0)
        elif key == "arms":
            opts[key] = read_int(d, loc, key, default, ge=2, le=100)
        elif key == "centers":
            opts[key] = read_int(d, loc, key, default, ge=2, le=1000)
        elif key == "n_features":
            opts[key] = read_int(d, loc, key, default, ge=1, le=MAX_UNITS)
    ds.options = opts
    return ds


def _arrays(d: dict, loc: str, task: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``X`` (float64, 2-D) and ``y``: labels (one per row) or float targets."""
    if "X" not in d or "y" not in d:
        raise SpecError(f"{loc}.{'X' if 'X' not in d else 'y'}", "is required for 'arrays'")
    try:
        X = np.asarray(d["X"], dtype=np.float64)
    except (TypeError, ValueError):
        raise SpecError(f"{loc}.X", "must be a rectangular list of numbers") from None
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 1:
        raise SpecError(f"{loc}.X", f"must have shape (n_samples >= 2, n_features), got {X.shape}")
    if not np.isfinite(X).all():
        raise SpecError(f"{loc}.X", "must hold finite numbers only (no NaN or inf)")
    try:
        y = np.asarray(d["y"])
    except (TypeError, ValueError):
        y = np.empty(0, object)
    if y.dtype == object or y.ndim == 0 or y.ndim > 2:
        raise SpecError(f"{loc}.y", "must be a list of labels or numbers (or rows of numbers)")
    if y.shape[0] != X.shape[0]:
        raise SpecError(f"{loc}.y", f"has {y.shape[0]} rows but X has {X.shape[0]}")
    if (task or infer_task(y)) == CLASSIFICATION:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise SpecError(f"{loc}.y", "must hold finite numbers only (no NaN or inf)")
        if y.ndim != 1:
            raise SpecError(
                f"{loc}.y",
                f"classification labels must be one label per row, got rows of {y.shape[1]} "
                "(for one-hot rows give each row's class; for several targets per row give "
                "floats or set task to 'regression')",
            )
    else:
        if y.dtype.kind not in "biuf":
            raise SpecError(f"{loc}.y", "regression targets must be numbers")
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise SpecError(f"{loc}.y", "must hold finite numbers only (no NaN or inf)")
    return X, y


def _uploaded(d: dict, loc: str) -> dict[str, Any]:
    """The facts of an ``uploaded`` dataset (its rows come to ``fit`` as ``data``):
    ``id``, ``sha256`` (its content hash, optional), ``task``, ``n_rows``, ``n_features``,
    and ``class_counts`` (one per class, in class order) for classification or
    ``n_targets`` for regression."""
    dataset_id = d.get("id")
    if not isinstance(dataset_id, str) or not dataset_id:
        raise SpecError(f"{loc}.id", "is required for 'uploaded': the dataset's id")
    sha = d.get("sha256")
    if sha is not None and not isinstance(sha, str):
        raise SpecError(f"{loc}.sha256", "must be the dataset's content hash (a string)")
    task = read_choice(d, loc, "task", (CLASSIFICATION, REGRESSION))
    n_rows = read_int(d, loc, "n_rows", ge=2, le=2**62)
    n_features = read_int(d, loc, "n_features", ge=1, le=2**31)
    counts = d.get("class_counts")
    n_targets = None
    if task == CLASSIFICATION:
        if (
            not isinstance(counts, list)
            or len(counts) < 2
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts)
        ):
            raise SpecError(
                f"{loc}.class_counts", "must list the rows of each class (at least 2 classes)"
            )
        if sum(counts) != n_rows:
            raise SpecError(f"{loc}.class_counts", f"sum to {sum(counts)}, not n_rows {n_rows}")
    else:
        if counts is not None:
            raise SpecError(f"{loc}.class_counts", "is for classification only")
        n_targets = read_int(d, loc, "n_targets", 1, ge=1, le=2**31)
    return {
        "id": dataset_id,
        "sha256": sha,
        "task": task,
        "n_rows": n_rows,
        "n_features": n_features,
        "class_counts": list(counts) if counts is not None else None,
        "n_targets": n_targets,
    }


def parse_architecture(d: Any, loc: str = "architecture") -> tuple[ArchitectureSpec, bool]:
    read_section(d, loc, ("layers", "output_activation", "initializer", "init_std"))
    if "layers" not in d:
        raise SpecError(f"{loc}.layers", 'is required (a list of {"units", "activation"})')
    raw = d["layers"]
    if not isinstance(raw, list):
        raise SpecError(f"{loc}.layers", f"must be a list, got {type(raw).__name__}")
    if len(raw) > MAX_LAYERS:
        raise SpecError(f"{loc}.layers", f"at most {MAX_LAYERS} hidden layers, got {len(raw)}")
    layers = []
    for i, layer in enumerate(raw):
        lloc = f"{loc}.layers.{i}"
        read_section(layer, lloc, ("units", "activation"))
        layers.append(
            LayerSpec(
                units=read_int(layer, lloc, "units", ge=1, le=MAX_UNITS),
                activation=read_choice(layer, lloc, "activation", HIDDEN_ACTIVATIONS, "relu"),
            )
        )
    out = read_choice_or_none(d, loc, "output_activation", OUTPUT_ACTIVATIONS, None)
    arch = ArchitectureSpec(
        layers=layers,
        output_activation=out or "",
        initializer=read_choice(d, loc, "initializer", tuple(INITIALIZERS), "he"),
        init_std=read_number(d, loc, "init_std", 0.01, gt=0.0, le=100.0),
    )
    return arch, out is None


def parse_schedule(d: Any, loc: str) -> dict:
    if d is None:
        d = {"name": "constant"}
    if not isinstance(d, dict):
        raise SpecError(loc, f"must be an object, got {type(d).__name__}")
    name = read_choice(d, loc, "name", tuple(SCHEDULE_OPTIONS), "constant")
    options = SCHEDULE_OPTIONS[name]
    read_section(d, loc, {"name", "warmup_epochs", *options})
    out: dict[str, Any] = {
        "name": name,
        "warmup_epochs": read_int(d, loc, "warmup_epochs", 0, ge=0, le=MAX_EPOCHS),
    }
    if name == "step":
        out["step_size"] = read_int(d, loc, "step_size", options["step_size"], ge=1, le=MAX_EPOCHS)
        out["gamma"] = read_number(d, loc, "gamma", options["gamma"], gt=0.0, le=1.0)
    elif name == "exponential":
        out["gamma"] = read_number(d, loc, "gamma", options["gamma"], gt=0.0, le=1.0)
    elif name == "cosine":
        out["t_max"] = read_int_or_none(d, loc, "t_max", None, ge=1, le=MAX_EPOCHS)
        out["min_lr"] = read_number(d, loc, "min_lr", 0.0, ge=0.0)
    return out


def parse_early_stopping(d: Any, loc: str) -> EarlyStoppingSpec | None:
    if d is None:
        return None
    read_section(d, loc, ("metric", "patience", "min_delta", "restore_best"))
    return EarlyStoppingSpec(
        metric=read_choice(d, loc, "metric", ES_METRICS, "val_loss"),
        patience=read_int(d, loc, "patience", 5, ge=1, le=MAX_EPOCHS),
        min_delta=read_number(d, loc, "min_delta", 0.0, ge=0.0),
        restore_best=read_bool(d, loc, "restore_best", True),
    )


_HP_FIELDS = (
    "learning_rate",
    "optimizer",
    "momentum",
    "nesterov",
    "dampening",
    "alpha",
    "eps",
    "betas",
    "weight_decay",
    "batch_size",
    "epochs",
    "loss",
    "lr_schedule",
    "l2",
    "dropout",
    "gradient_clip_norm",
    "early_stopping",
    "seed",
    "dtype",
    "train_metrics",
)


def parse_hyperparameters(d: Any, loc: str = "hyperparameters") -> tuple[HyperParameters, bool]:
    read_section(d, loc, _HP_FIELDS)
    optimizer = read_choice(d, loc, "optimizer", tuple(OPTIMIZERS), "sgd")
    momentum = read_number(d, loc, "momentum", 0.0, ge=0.0, lt=1.0)
    nesterov = read_bool(d, loc, "nesterov", False)
    dampening = read_number(d, loc, "dampening", 0.0, ge=0.0, lt=1.0)
    if nesterov and optimizer == "sgd" and (momentum <= 0 or dampening != 0):
        raise SpecError(f"{loc}.nesterov", "needs momentum > 0 and dampening = 0 (as PyTorch)")
    betas = d.get("betas", [0.9, 0.999])
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise SpecError(f"{loc}.betas", "must be a list of two numbers in [0, 1)")
    betas = [
        read_number({str(i): b}, f"{loc}.betas", str(i), ge=0.0, lt=1.0)
        for i, b in enumerate(betas)
    ]
    wd_default = 0.01 if optimizer == "adamw" else 0.0
    weight_decay = read_number_or_none(d, loc, "weight_decay", wd_default, ge=0.0)
    if weight_decay is None:
        weight_decay = wd_default
    if weight_decay and optimizer != "adamw":
        raise SpecError(
            f"{loc}.weight_decay", "is adamw's decoupled decay; use l2 for the other optimizers"
        )
    hp = HyperParameters(
        learning_rate=read_number(d, loc, "learning_rate", gt=0.0, le=1e6),
        loss=read_choice_or_none(d, loc, "loss", tuple(LOSSES), None) or "",
        optimizer=optimizer,
        momentum=momentum,
        nesterov=nesterov,
        dampening=dampening,
        alpha=read_number(d, loc, "alpha", 0.99, ge=0.0, lt=1.0),
        eps=read_number(d, loc, "eps", 1e-8, gt=0.0, le=1.0),
        betas=betas,
        weight_decay=weight_decay,
        batch_size=read_int_or_none(d, loc, "batch_size", 32, ge=1, le=MAX_SAMPLES),
        epochs=read_int(d, loc, "epochs", 20, ge=1, le=MAX_EPOCHS),
        lr_schedule=parse_schedule(d.get("lr_schedule"), f"{loc}.lr_schedule"),
        l2=read_number(d, loc, "l2", 0.0, ge=0.0, le=1e3),
        dropout=read_number(d, loc, "dropout", 0.0, ge=0.0, lt=1.0),
        gradient_clip_norm=read_number_or_none(d, loc, "gradient_clip_norm", None, gt=0.0),
        early_stopping=parse_early_stopping(d.get("early_stopping"), f"{loc}.early_stopping"),
        seed=read_int(d, loc, "seed", 0, ge=0, le=2**63 - 1),
        dtype=read_choice(d, loc, "dtype", DTYPES, "float32"),
        train_metrics=read_choice(d, loc, "train_metrics", TRAIN_METRICS, "after_epoch"),
    )
    return hp, not d.get("loss")


def resolve_head(
    task: str, n_classes: int | None, output_activation: str, loss: str, loc: str = ""
) -> tuple[str, str]:
    """Fill in (and check) the output activation and loss for a task.

    Multi-class -> softmax + cross_entropy; binary -> sigmoid +
    binary_cross_entropy; regression -> linear + mse.
    """
    out_loc = join_loc(loc, "architecture.output_activation")
    loss_loc = join_loc(loc, "hyperparameters.loss")
    if task == REGRESSION:
        out = output_activation or "linear"
        if loss and loss != "mse":
            raise SpecError(loss_loc, f"a regression task needs 'mse', got {loss!r}")
        if out == "softmax":
            raise SpecError(out_loc, "softmax needs a classification task")
        return out, "mse"
    binary = n_classes == 2
    if output_activation == "sigmoid" and n_classes not in (None, 2) and loss != "mse":
        raise SpecError(out_loc, f"sigmoid output needs 2 classes, got {n_classes}; use softmax")
    if not output_activation:
        if loss == "cross_entropy":
            output_activation = "softmax"
        elif loss == "binary_cross_entropy" or binary:
            output_activation = "sigmoid"
        else:
            output_activation = "softmax"
    if not loss:
        loss = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(
            output_activation, "mse"
        )
    if loss == "cross_entropy" and output_activation != "softmax":
        raise SpecError(out_loc, f"cross_entropy needs 'softmax', got {output_activation!r}")
    if loss == "binary_cross_entropy":
        if output_activation != "sigmoid":
            raise SpecError(
                out_loc, f"binary_cross_entropy needs 'sigmoid', got {output_activation!r}"
            )
        if n_classes is not None and n_classes != 2:
            raise SpecError(loss_loc, f"binary_cross_entropy needs 2 classes, got {n_classes}")
    if (
        output_activation == "sigmoid"
        and n_classes is not None
        and n_classes != 2
        and loss != "mse"
    ):
        raise SpecError(out_loc, f"sigmoid output needs 2 classes, got {n_classes}")
    return output_activation, loss


def parse_spec(d: Any) -> Spec:
    """Validate a job spec dict and fill in its defaults.

    Raises
    ------
    SpecError
        With ``loc`` the dotted path of the first offending field.
    """
    if isinstance(d, Spec):
        return d
    read_section(d, "", ("name", "dataset", "architecture", "hyperparameters"))
    name = d.get("name", "job")
    if not isinstance(name, str) or len(name) > 200:
        raise SpecError("name", "must be a string of at most 200 characters")
    for key in ("dataset", "architecture", "hyperparameters"):
        if key not in d:
            raise SpecError(key, "is required")
    dataset = parse_dataset(d["dataset"])
    arch, out_inferred = parse_architecture(d["architecture"])
    hp, loss_inferred = parse_hyperparameters(d["hyperparameters"])
    task, n_classes = dataset_task(dataset.name, dataset.options)
    if task == CLASSIFICATION and n_classes is not None and n_classes < 2:
        raise SpecError("dataset.y", f"classification needs at least 2 classes, got {n_classes}")
    arch.output_activation, hp.loss = resolve_head(task, n_classes, arch.output_activation, hp.loss)
    es = hp.early_stopping
    if es is not None:
        no_val = validation_rows(dataset.name, dataset.options, dataset.validation_split) == 0
        if es.metric.startswith("val_") and no_val:
            raise SpecError(
                "hyperparameters.early_stopping.metric",
                f"{es.metric!r} needs a validation set: raise dataset.validation_split",
            )
        if es.metric.endswith("accuracy") and task == REGRESSION:
            raise SpecError(
                "hyperparameters.early_stopping.metric",
                "accuracy needs a classification task; use val_loss or train_loss",
            )
    if hp.dropout and not arch.layers:
        raise SpecError("hyperparameters.dropout", "needs at least one hidden layer")
    return Spec(name, dataset, arch, hp, task, n_classes, (out_inferred, loss_inferred))
