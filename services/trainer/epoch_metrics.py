"""What is measured after each epoch's updates: accuracies, validation loss, live ReLU units.

``train_metrics`` decides how the training accuracy is measured:

``"after_epoch"`` (the default)
    With the epoch's final weights, like ``val_accuracy``, on a fixed sample
    of ``TRAIN_SAMPLE_ROWS`` (1,024) training rows, all of them when the set
    is no larger. The rows are ``np.sort(np.random.default_rng(seed).choice(
    n_train, 1024, replace=False))`` with ``seed = hyperparameters.seed``,
    drawn once per run (a resumed run draws the same); ``TrainResult.
    train_metrics`` records the rows, the set's size and the seed. The same
    rows every epoch, so epochs differ by what the network learnt, not by
    sampling; the standard error against the whole set is at most
    ``0.5 / sqrt(1024)`` = 1.6 points. The share of ReLU units that fired is
    counted on the same rows.
``"running"``
    During the epoch, each row with the weights of its batch before that
    batch's update, as Keras and PyTorch Lightning report it: free, but half
    an epoch behind and taken with dropout on; the live ReLU units are counted
    on the validation rows (the training rows without them).

The validation set is always evaluated whole, after the epoch.

Why a sample (measured on the benchmark's networks, float32, one thread):
a pass over the whole training set costs 20%, 34% and 42% of the training
time on 2-64-64-2, 64-128-128-10 and 784-256-256-10 (8,192 / 16,384 / 16,384
rows); 1,024 rows cost 0-3%, 2,048 rows 2-5%. Against the whole set's
after-epoch accuracy over 15 epochs (a 16,384-row set with and without
dropout 0.3, 20,000 spirals, digits), the 1,024-row sample was off by at most
2.2 points and the running accuracy by up to 11-26 points (epoch 1) and
19-22 points throughout with dropout.
"""

from __future__ import annotations

import numpy as np

from .epoch import RunningAccuracy

TRAIN_SAMPLE_ROWS = 1024


def train_sample(n: int, rows: int, seed: int) -> np.ndarray | None:
    """The sorted row indices of the after-epoch sample (None: the whole set)."""
    if n <= rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, rows, replace=False))


class EpochMetrics:
    """The after-epoch measurements of one run: ``measure()`` per epoch gives
    ``(train_accuracy, val_loss, val_accuracy, active)``, ``active`` one boolean
    array per layer (None for non-ReLU layers) of the units that fired on a row.

    Parameters
    ----------
    net : Network
    mode : "after_epoch" or "running"
    X_ones, Y, labels : the training rows (a column of ones appended), their
        targets shaped like the outputs, their class indices (None: regression)
    X_val_ones, Y_val, labels_val : the same for the validation rows
    bounds : the batches' row ranges (for the running accuracy)
    seed : draws the after-epoch sample
    """

    def __init__(
        self,
        net,
        mode: str,
        X_ones,
        Y,
        labels,
        X_val_ones,
        Y_val,
        labels_val,
        bounds: list[tuple[int, int]],
        seed: int,
        sample_rows: int | None = None,
    ):
        self.net = net
        classification = labels is not None
        self.relu = [layer.activation.name == "relu" for layer in net.layers]
        self.has_val = len(X_val_ones) > 0
        running = mode == "running"
        self.running = RunningAccuracy(net, labels, bounds) if classification and running else None
        # A pass over training rows: for the accuracy, and for the ReLU units
        # that fired on a training row (regression too), unless "running" asked
        # to save it (the validation rows stand in).
        self.train_pass = (classification and not running) or (
            any(self.relu) and (not running or not self.has_val)
        )
        n = len(X_ones)
        sample_rows = TRAIN_SAMPLE_ROWS if sample_rows is None else sample_rows
        idx = None if running else train_sample(n, sample_rows, seed)
        rows = n if idx is None else len(idx)
        self.info: dict = {"mode": mode}
        if not running:
            self.info.update(sample_rows=rows, training_rows=n, sample_seed=seed)
        self.X_train, self.Y_train, self.labels_train = None, None, None
        if self.train_pass:
            # F-ordered targets: the loss reads them like the evaluation's outputs
            self.X_train = X_ones if idx is None else X_ones[idx]
            self.Y_train = np.asfortranarray(Y if idx is None else Y[idx])
            if classification:
                self.labels_train = labels if idx is None else labels[idx]
        self.X_val, self.Y_val, self.labels_val = X_val_ones, Y_val, labels_val

    def shuffle(self, perm: np.ndarray) -> None:
        if self.running is not None:
            self.running.shuffle(perm)

    def measure(self) -> tuple[float | None, float | None, float | None, list]:
        net = self.net
        active = [
            np.zeros(layer.n_out, bool) if r else None
            for layer, r in zip(net.layers, self.relu, strict=True)
        ]
        train_acc = val_loss = val_acc = None
        if self.running is not None:
            train_acc = self.running.value()
        if self.train_pass:
            _, acc = net.evaluate(
                self.X_train, self.Y_train, self.labels_train, active, ones_column=True
            )
            if self.running is None:
                train_acc = acc
        if self.has_val:
            val_loss, val_acc = net.evaluate(
                self.X_val,
                self.Y_val,
                self.labels_val,
                None if self.train_pass else active,
                ones_column=True,
            )
        return train_acc, val_loss, val_acc, active
