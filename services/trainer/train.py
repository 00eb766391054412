"""The training loop: mini-batch gradient descent, early stopping, divergence, checkpoints.

``fit(spec)`` trains epoch by epoch. Each epoch draws a fresh permutation
from the job's training generator and gathers the shuffled data once (for
sets larger than ``GATHER_PER_EPOCH_BYTES``: batch by batch into a reused
buffer); the mini-batches are then slices, every layer
writes into preallocated buffers, and the optimizer updates one flat
parameter vector. Per-epoch metrics (norms, dead units, accuracies) are
computed once per epoch, not per step.

A record per epoch (see ``docs/CONTRACTS.md``)::

    epoch             1-based
    train_loss        mean of the epoch's mini-batch data losses, each taken
                      before its update
    val_loss          after the epoch's updates (None without a validation set)
    train_accuracy    classification only: after the epoch's updates
                      (``train_metrics="running"``: over the mini-batches before
                      each update, which saves a pass over the training set)
    val_accuracy      classification only
    learning_rate     the epoch's rate
    grad_norm         per layer ||dL/dW|| (data loss + L2, before clipping) on the
                      epoch's last full-size mini-batch
    weight_norm       per layer ||W|| after the epoch
    dead_relu_fraction per layer share of ReLU units that fired on no training
                      row after the epoch (validation rows with "running");
                      None for other layers
    seconds           wall time of the epoch

A non-finite mini-batch loss ends training in that batch's epoch (status
``"diverged"``), without the rest of the epoch's updates or its evaluation;
that epoch's record holds None for what was not measured. Weights are checked
once per epoch (a non-finite weight makes the next batch's loss non-finite).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .checkpoint import Checkpoint, dump_checkpoint, load_checkpoint
from .data import CLASSIFICATION, Dataset, load_dataset
from .diagnostics import diagnose
from .losses import CrossEntropy
from .network import Network, build_network, generators
from .optimizers import clip_by_global_norm, get_optimizer
from .schedules import learning_rate
from .spec import Spec, SpecError, parse_spec

GATHER_PER_EPOCH_BYTES = 8 << 20
COMPLETED, EARLY_STOPPED, DIVERGED, STOPPED = "completed", "early_stopped", "diverged", "stopped"


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


def _previous_records(
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


class _ShuffledTargets:
    """An epoch's targets in shuffled order, each batch an F-ordered ``(rows, n_out)`` view.

    The rows of batch ``[s, e)`` live as one C-ordered ``(n_out, e - s)``
    block of a flat buffer; ``gather(perm)`` fills every block for the epoch's
    permutation in two copies (all full batches at once, then the short one).
    """

    def __init__(self, Y: np.ndarray, batches: list[tuple[int, int]]):
        n, k = Y.shape
        self.Y, self.k = Y, k
        self.rows = np.empty_like(Y)  # Y[perm], C-ordered
        self.flat = np.empty(n * k, Y.dtype)
        self.batches = [self.flat[s * k : e * k].reshape(k, e - s).T for s, e in batches]
        bs = batches[0][1]
        self.bs, self.full = bs, (n // bs) * bs  # rows in full batches

    def gather(self, perm: np.ndarray) -> None:
        # mode="clip": with the default "raise" NumPy buffers `out` (3-4x slower)
        np.take(self.Y, perm, axis=0, out=self.rows, mode="clip")
        k, bs, full = self.k, self.bs, self.full
        if full:
            np.copyto(
                self.flat[: full * k].reshape(full // bs, k, bs),
                self.rows[:full].reshape(full // bs, bs, k).transpose(0, 2, 1),
            )
        if full < len(self.rows):
            np.copyto(self.flat[full * k :].reshape(k, -1), self.rows[full:].T)


def _copy_to(out: np.ndarray, a: np.ndarray) -> np.ndarray:
    np.copyto(out, a)
    return out


def _finite_or_none(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class _BestTracker:
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
        if self.best is None:
            better = True
        elif self.mode == "min":
            better = value < self.best - self.min_delta
        else:
            better = value > self.best + self.min_delta
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


def _as_indices_of(data: Dataset, width: int) -> Dataset:
    """``data`` whose encoded labels are integer class indices of a network with
    ``width`` classes, decoded back to them (``dataset_from_arrays`` encodes a
    subset such as {1, 2} as {0, 1}); any other ``data`` as it is."""
    classes = np.asarray(data.classes)
    if classes.dtype.kind not in "iu" or classes.min() < 0 or classes.max() >= width:
        return data
    return dataclasses.replace(data, y_train=classes[data.y_train], y_val=classes[data.y_val],
                               n_classes=width, classes=None)  # fmt: skip


def _as_dataset(data) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, dict):
        return load_dataset(data)
    raise TypeError(f"data must be a Dataset or a dataset spec dict, got {type(data).__name__}")


def fit(
    spec,
    *,
    data: Dataset | dict | None = None,
    network: Network | None = None,
    on_epoch: Callable[[dict], bool | None] | None = None,
    resume_from: bytes | None = None,
    history: list[dict] | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[int, bytes], None] | None = None,
) -> TrainResult:
    """Train a network as ``spec`` describes.

    Parameters
    ----------
    spec : dict or Spec
        The job spec (validated by ``parse_spec``; a bad one raises ``SpecError``).
    data : Dataset or dict, optional
        Data to use instead of ``spec["dataset"]``.
    network : Network, optional
        Start from this network (it is trained in place) instead of a fresh one.
    on_epoch : callable, optional
        ``on_epoch(record)`` after each epoch; a truthy return stops training
        (status ``"stopped"``).
    resume_from : bytes, optional
        A checkpoint from ``on_checkpoint``; training continues after its epoch
        and reproduces the uninterrupted run bit for bit, records, best epoch
        and diagnosis included.
    history : list of dict, optional
        With ``resume_from`` (taken after epoch ``k``): the records of epochs
        ``1..k``, in order, as ``on_epoch`` received them or in their
        ``flatten_record`` form (what a caller that stores flat metrics has).
        Checkpoints do not carry the history, so that their size does not grow
        with the run; required unless the checkpoint is an old one that does.
        Ignored without ``resume_from``.
    checkpoint_every : int
        If > 0, call ``on_checkpoint(epoch, blob)`` every that many epochs.

    Returns
    -------
    TrainResult
        ``status`` is ``"completed"``, ``"early_stopped"``, ``"diverged"`` or
        ``"stopped"``; divergence is never an exception.
    """
    started = time.perf_counter()
    spec = parse_spec(spec)
    hp = spec.hyperparameters
    data = _as_dataset(data) if data is not None else load_dataset(spec.dataset)
    if len(data.X_train) == 0:
        raise ValueError("the training set is empty")
    es_metric = hp.early_stopping.metric if hp.early_stopping is not None else ""
    if es_metric.startswith("val_") and len(data.X_val) == 0:
        raise SpecError(
            "hyperparameters.early_stopping.metric",
            f"{es_metric!r} needs a validation set, and this data has no validation rows",
        )
    init_rng, rng = generators(hp.seed)
    net = network if network is not None else build_network(spec, data, init_rng)
    if data.n_features != net.layers[0].n_in:
        raise ValueError(
            f"the data has {data.n_features} features but the network takes {net.layers[0].n_in}"
        )
    dtype = net.dtype
    classification = data.task == CLASSIFICATION
    n_out = net.layers[-1].n_out
    if network is not None and classification and data.classes:
        data = _as_indices_of(data, max(n_out, 2))
    if classification and data.n_classes is not None and data.n_classes > max(n_out, 2):
        raise ValueError(f"the data has {data.n_classes} classes but the network {n_out} outputs")

    # Inputs with a column of ones appended: the first layer's bias rides in
    # its matrix product (see backprop.TrainingPass).
    X_ones = np.ones((len(data.X_train), net.layers[0].n_in + 1), dtype)
    X_ones[:, :-1] = data.X_train
    Y_train = net.encode_targets(data.y_train)
    X_val = np.ones((len(data.X_val), net.layers[0].n_in + 1), dtype)
    X_val[:, :-1] = data.X_val
    Y_val = np.asfortranarray(net.encode_targets(data.y_val))  # F-ordered like the outputs
    labels_train = data.y_train.astype(np.int64) if classification else None
    labels_val = data.y_val.astype(np.int64) if classification else None
    has_val = len(X_val) > 0

    optimizer = get_optimizer(hp.optimizer, net.n_weights, **hp.optimizer_options())
    es = hp.early_stopping
    if es is not None:
        tracker = _BestTracker(es.metric, es.mode, es.min_delta, es.patience)
    else:
        tracker = _BestTracker("val_loss" if has_val else "train_loss", "min")
    restore_best = es is not None and es.restore_best
    best_params = net.params_flat.copy() if restore_best else None

    records: list[dict] = []
    start_epoch, seconds_before = 0, 0.0
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        if ckpt.meta["architecture"]["sizes"] != net.sizes or ckpt.params.size != net.n_params:
            raise ValueError("checkpoint does not match the network this spec builds")
        records = _previous_records(history, ckpt, len(net.layers), classification)
        net.set_canonical(ckpt.params)
        optimizer.load_state_dict(
            ckpt.meta["optimizer"],
            {k: net.set_canonical(v, np.empty_like(v)) for k, v in ckpt.optimizer_arrays.items()},
        )
        rng.bit_generator.state = ckpt.meta["rng"]
        tracker.load(ckpt.meta["tracker"])
        if ckpt.best_params is not None and restore_best:
            best_params = net.set_canonical(ckpt.best_params, np.empty_like(ckpt.best_params))
        start_epoch = ckpt.epoch
        seconds_before = float(ckpt.meta.get("seconds", 0.0))

    n = len(X_ones)
    bs = min(hp.batch_size or n, n)
    batches = [(s, min(s + bs, n)) for s in range(0, n, bs)]
    norm_step = len(batches) - 2 if (n % bs and len(batches) > 1) else len(batches) - 1
    running = hp.train_metrics == "running" or not classification
    relu_layers = [layer.activation.name == "relu" for layer in net.layers]

    # Buffers. Small sets are gathered in shuffled order once per epoch and the
    # batches are slices; sets too big for the cache are gathered batch by
    # batch into a buffer that then stays hot for the matrix products. Both
    # give the same batches, so the same numbers.
    # Targets go to the loss F-ordered, like the training pass's outputs.
    # A pass over X_train after the epoch: for the accuracy, and for the ReLU
    # units that fired on a training row (regression too), unless "running"
    # asked to save it (the validation rows stand in) or there is nothing else.
    measure_train = (
        hp.train_metrics != "running" and (classification or any(relu_layers))
    ) or not has_val
    Y_train_F = np.asfortranarray(Y_train) if measure_train else Y_train
    per_epoch_gather = X_ones.nbytes + Y_train.nbytes <= GATHER_PER_EPOCH_BYTES
    if per_epoch_gather:
        Xe = np.empty_like(X_ones)
        targets = _ShuffledTargets(Y_train, batches)
    else:
        Xb_buf = {e - s: np.empty((e - s, X_ones.shape[1]), dtype) for s, e in batches}
        Yb_buf = {e - s: np.empty((e - s, Y_train.shape[1]), dtype) for s, e in batches}
        YbF_buf = {e - s: np.empty((Y_train.shape[1], e - s), dtype).T for s, e in batches}
    Le = np.empty_like(labels_train) if classification else None
    track_predictions = classification and running
    predicted = np.empty(n, np.int64)  # running mode: each row's class before its update
    passes = {e - s: net.training_pass(e - s) for s, e in batches}
    batch_losses = np.empty(len(batches), np.float64)
    params, grads, nw = net.params_flat, net.grads_flat, net.n_weights
    W_all, gW_all = params[:nw], grads[:nw]
    l2_tmp = np.empty_like(W_all) if hp.l2 else None
    loss_fn, clip = net.loss, hp.gradient_clip_norm
    # Plain SGD without L2 or clipping: the loss folds the learning rate into
    # its gradient's 1/batch factor, backpropagation yields lr * g and the
    # update is one subtraction (not at the step whose gradient norms the
    # record reports, which must see g itself).
    fold_lr = optimizer.takes_prescaled and l2_tmp is None and clip is None
    # Cross-entropy (not a subclass, which may compute its loss its own way):
    # per batch the gradient and the finite check; the loss values of an
    # epoch's batches at its end, in three calls (see CrossEntropy.gradient).
    # Until then batch_losses holds each batch's picked sum.
    ce_gradient = None
    if type(loss_fn) is CrossEntropy:
        ce_gradient = loss_fn.gradient
    deferred = ce_gradient is not None
    if deferred:
        row_sums = np.empty(n, dtype)
        row_sum_views = [row_sums[s:e].reshape(-1, 1) for s, e in batches]
        batch_starts = np.array([s for s, _ in batches])
        batch_sizes = np.array([e - s for s, e in batches], np.float64)

    status, diverged_epoch = COMPLETED, None
    epoch = start_epoch
    for epoch in range(start_epoch + 1, hp.epochs + 1):
        t0 = time.perf_counter()
        lr = learning_rate(hp.learning_rate, epoch - 1, hp.lr_schedule, hp.epochs)
        perm = rng.permutation(n)
        # mode="clip": with the default "raise" NumPy buffers `out` (3-4x slower);
        # a permutation's indices are in range anyway.
        if per_epoch_gather:
            np.take(X_ones, perm, axis=0, out=Xe, mode="clip")
            targets.gather(perm)
        if track_predictions:
            np.take(labels_train, perm, out=Le, mode="clip")  # type: ignore[call-overload]
        fold = fold_lr and lr > 0
        grad_norms: list[float] = []  # stays empty if the epoch diverged before its norm step
        diverged_in_batch = False
        with np.errstate(all="ignore"):
            for i, (s, e) in enumerate(batches):
                if per_epoch_gather:
                    Xb, Yb = Xe[s:e], targets.batches[i]
                else:
                    Xb = np.take(X_ones, perm[s:e], axis=0, out=Xb_buf[e - s], mode="clip")
                    Yb = np.take(Y_train, perm[s:e], axis=0, out=Yb_buf[e - s], mode="clip")
                    Yb = _copy_to(YbF_buf[e - s], Yb)
                step = passes[e - s]
                O = step.forward(Xb, rng)
                dO = step.dO
                scaled = fold and i != norm_step
                if ce_gradient is not None:
                    loss = batch_losses[i] = ce_gradient(
                        O, Yb, dO, lr if scaled else 1.0, row_sum_views[i]
                    )
                else:
                    loss = batch_losses[i] = loss_fn.forward_backward(
                        O, Yb, dO, lr if scaled else 1.0
                    )
                if not math.isfinite(loss):  # diverged: stop here, not after an epoch of NaNs
                    diverged_in_batch = True
                    break
                if track_predictions:
                    net.predict_labels(O, out=predicted[s:e])
                step.backward(dO)
                if l2_tmp is not None:
                    np.multiply(W_all, hp.l2, out=l2_tmp)
                    gW_all += l2_tmp
                if i == norm_step:
                    grad_norms = net.grad_norms()
                if clip is not None:
                    clip_by_global_norm(grads, clip)
                optimizer.step(params, grads, lr, scaled)

            train_loss: float | None = None
            train_acc: float | None = None
            val_loss: float | None = None
            val_acc: float | None = None
            active: list[np.ndarray | None] = [None] * len(net.layers)
            if diverged_in_batch:  # nothing after the batch is measured
                finite = False
            else:
                if deferred:  # batch_losses held the picked sums
                    log_sums = np.add.reduceat(np.log(row_sums), batch_starts, dtype=np.float64)
                    np.subtract(log_sums, batch_losses, out=batch_losses)
                    batch_losses /= batch_sizes
                train_loss = float(batch_losses.mean())
                # after the epoch's updates: accuracies and the units that fired
                active = [
                    np.zeros(layer.n_out, bool) if r else None
                    for layer, r in zip(net.layers, relu_layers, strict=True)
                ]
                measured = False
                if track_predictions:
                    train_acc = int(np.count_nonzero(predicted == Le)) / n
                if measure_train:
                    _, train_acc_after = net.evaluate(
                        X_ones, Y_train_F, labels_train, active, ones_column=True
                    )
                    train_acc = train_acc if running else train_acc_after
                    measured = True
                if has_val:
                    val_loss, val_acc = net.evaluate(
                        X_val, Y_val, labels_val, None if measured else active, ones_column=True
                    )
                finite = math.isfinite(train_loss) and bool(np.isfinite(params).all())
                finite = finite and (val_loss is None or math.isfinite(val_loss))

        record = {
            "epoch": epoch,
            "train_loss": _finite_or_none(train_loss),
            "val_loss": _finite_or_none(val_loss),
        }
        if classification:
            record["train_accuracy"] = train_acc
            record["val_accuracy"] = val_acc
        record["learning_rate"] = lr
        record["grad_norm"] = [_finite_or_none(g) for g in grad_norms] or [None] * len(net.layers)
        record["weight_norm"] = [_finite_or_none(w) for w in net.weight_norms()]
        record["dead_relu_fraction"] = [
            float(1.0 - a.mean()) if a is not None else None for a in active
        ]
        record["seconds"] = time.perf_counter() - t0
        records.append(record)

        if not finite:
            status, diverged_epoch = DIVERGED, epoch
            if on_epoch is not None:
                on_epoch(record)
            break
        if tracker.update(epoch, record.get(tracker.metric)) and best_params is not None:
            np.copyto(best_params, params)
        if on_epoch is not None and on_epoch(record):
            status = STOPPED
            break
        if tracker.should_stop:
            status = EARLY_STOPPED
            break
        if (
            checkpoint_every > 0
            and on_checkpoint is not None
            and epoch % checkpoint_every == 0
            and epoch < hp.epochs
        ):
            elapsed = seconds_before + time.perf_counter() - started
            on_checkpoint(
                epoch,
                _checkpoint(spec, net, optimizer, rng, tracker, best_params, epoch, elapsed),
            )

    # However the run ended (a diverged one too: its last weights are not finite),
    # restore_best hands back the best epoch's weights.
    if restore_best and tracker.best_epoch is not None:
        np.copyto(params, best_params)  # type: ignore[arg-type]

    best_metrics = None
    if tracker.best_epoch is not None:
        best_metrics = flatten_record(records[tracker.best_epoch - 1])
        best_metrics.pop("seconds", None)
    seconds = seconds_before + time.perf_counter() - started
    baseline = float(np.mean(np.var(Y_train, axis=0))) if not classification else None
    diagnosis = diagnose(
        records,
        status=status,
        task=data.task,
        diverged_epoch=diverged_epoch,
        baseline_loss=baseline,
    )
    return TrainResult(
        status,
        records,
        tracker.best_epoch,
        best_metrics,
        diverged_epoch,
        seconds,
        diagnosis,
        net,
        spec,
        data.summary(),
        data,
    )


def _checkpoint(
    spec: Spec,
    net: Network,
    optimizer,
    rng: np.random.Generator,
    tracker: _BestTracker,
    best_params,
    epoch: int,
    seconds: float,
) -> bytes:
    scalars, arrays = optimizer.state_dict()
    meta = {
        "epoch": epoch,
        "spec": spec.to_dict(),
        "architecture": net.architecture(),
        "optimizer": scalars,
        "rng": rng.bit_generator.state,
        "tracker": tracker.state(),
        "seconds": seconds,
    }
    arrays = {key: net.canonical(value) for key, value in arrays.items()}
    best = net.canonical(best_params) if best_params is not None else None
    return dump_checkpoint(Checkpoint(meta, net.canonical(net.params_flat), arrays, best))
