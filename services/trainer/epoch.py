"""The machinery of an epoch: each speed trick of ``fit``'s loop, named, with its reason.

``fit`` reads like the textbook loop (shuffle; per batch forward, loss,
backward, step). What makes that loop cost ~30 NumPy calls a step and
little else lives here:

- ``Batches``: the shuffled mini-batches. Small sets are gathered once per
  epoch (one ``take`` instead of one per batch) and each batch is a fixed
  view; sets too big for the cache are gathered batch by batch into a reused
  buffer that stays hot for the matrix products. Both give the same batches.
- ``ShuffledTargets``: the targets laid out so that each batch reaches the
  loss F-ordered, like the training pass's outputs, without a copy per batch.
- ``LearningRateFolding``: plain SGD folds its learning rate into the loss
  gradient's ``1 / batch`` factor, so the update is one subtraction.
- ``GradientNorms``: the per-layer gradient norms of a record are the mean
  over ``NORM_BATCHES`` (8) evenly spaced mini-batches of the epoch, not over
  all of them: one ``np.dot`` per layer and step costs 8-16% of the training
  time of a 2-64-64-2 network at batch 32 (measured), 8 steps an epoch
  nothing measurable.
- ``BatchLosses`` / ``DeferredCrossEntropy``: cross-entropy's logarithms are
  taken once per epoch, not once per batch.
- ``RunningAccuracy``: ``train_metrics="running"`` counts each row's class as
  its batch is trained, from outputs the step computes anyway.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .backprop import TrainingPass
from .losses import CrossEntropy, Loss

NORM_BATCHES = 8  # mini-batches per epoch whose gradient norms a record averages


def norm_steps(bounds: list[tuple[int, int]], k: int = NORM_BATCHES) -> list[int]:
    """The batches whose gradient norms an epoch's record averages: ``min(k, c)`` of the
    ``c`` full-size batches (a short last batch is left out), evenly spaced, the last
    full-size one included: ``full[(j + 1) * c // m - 1]`` for ``j < m``."""
    size = bounds[0][1] - bounds[0][0]
    full = [i for i, (s, e) in enumerate(bounds) if e - s == size]
    c = len(full)
    m = min(k, c)
    return [full[(j + 1) * c // m - 1] for j in range(m)]


class ShuffledTargets:
    """An epoch's targets in shuffled order, each batch an F-ordered ``(rows, n_out)`` view.

    Why: the loss reduces each row along contiguous memory when its targets
    are F-ordered like the outputs. The rows of batch ``[s, e)`` live as one
    C-ordered ``(n_out, e - s)`` block of a flat buffer; ``gather(perm)``
    fills every block for the epoch's permutation in two copies (all full
    batches at once, then the short one).
    """

    def __init__(self, Y: np.ndarray, bounds: list[tuple[int, int]]):
        n, k = Y.shape
        self.Y, self.k = Y, k
        self.rows = np.empty_like(Y)  # Y[perm], C-ordered
        self.flat = np.empty(n * k, Y.dtype)
        self.batches = [self.flat[s * k : e * k].reshape(k, e - s).T for s, e in bounds]
        bs = bounds[0][1]
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


class Batches:
    """An epoch's mini-batches in shuffled order, as ``(Xb, Yb, training_pass)``.

    ``X_ones`` is the training set with a column of ones appended (the first
    layer's bias rides in its product); ``Y`` its targets shaped like the
    outputs. Call ``shuffle(perm)`` once per epoch, then iterate.

    Why two ways: a set of at most ``gather_bytes`` is gathered in shuffled
    order once per epoch and the batches are fixed views of that buffer (one
    gather instead of per-batch fancy indexing, which matters most for small
    networks); a bigger set is gathered batch by batch into a buffer that
    then stays in the cache for the matrix products. The batches are equal.
    """

    def __init__(
        self, net, X_ones: np.ndarray, Y: np.ndarray, batch_size: int | None, gather_bytes: int
    ):
        n = len(X_ones)
        bs = min(batch_size or n, n)
        self.n, self.X, self.Y = n, X_ones, Y
        self.bounds = [(s, min(s + bs, n)) for s in range(0, n, bs)]
        #: the batches whose gradient norms the record averages (see ``norm_steps``)
        self.norm_steps = norm_steps(self.bounds)
        self.passes: dict[int, TrainingPass] = {
            e - s: net.training_pass(e - s) for s, e in self.bounds
        }
        self.per_epoch = X_ones.nbytes + Y.nbytes <= gather_bytes
        self._perm = np.arange(n)
        if self.per_epoch:
            self._Xe = np.empty_like(X_ones)
            self._targets = ShuffledTargets(Y, self.bounds)
            self._views = [
                (self._Xe[s:e], self._targets.batches[i], self.passes[e - s])
                for i, (s, e) in enumerate(self.bounds)
            ]
        else:
            sizes = {e - s for s, e in self.bounds}
            dtype, d, k = X_ones.dtype, X_ones.shape[1], Y.shape[1]
            self._Xb = {m: np.empty((m, d), dtype) for m in sizes}
            self._Yb = {m: np.empty((m, k), dtype) for m in sizes}
            self._YbF = {m: np.empty((k, m), dtype).T for m in sizes}

    def __len__(self) -> int:
        return len(self.bounds)

    def shuffle(self, perm: np.ndarray) -> None:
        """Take the epoch's order (a permutation of the rows)."""
        self._perm = perm
        if self.per_epoch:
            # mode="clip": with the default "raise" NumPy buffers `out` (3-4x
            # slower); a permutation's indices are in range anyway.
            np.take(self.X, perm, axis=0, out=self._Xe, mode="clip")
            self._targets.gather(perm)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, TrainingPass]]:
        return iter(self._views) if self.per_epoch else self._gathered_per_batch()

    def _gathered_per_batch(self) -> Iterator[tuple[np.ndarray, np.ndarray, TrainingPass]]:
        perm, take = self._perm, np.take
        for s, e in self.bounds:
            m = e - s
            Xb = take(self.X, perm[s:e], axis=0, out=self._Xb[m], mode="clip")
            Yb = take(self.Y, perm[s:e], axis=0, out=self._Yb[m], mode="clip")
            np.copyto(self._YbF[m], Yb)
            yield Xb, self._YbF[m], self.passes[m]


class GradientNorms:
    """Per layer, the mean of ``||dL/dW||`` (Frobenius; data loss + L2, before
    clipping) over the batches ``add`` was called for: ``fit`` calls it at the
    epoch's ``norm_steps``, after the backward pass (those steps are not folded,
    so the gradient is ``g`` itself).
    """

    def __init__(self, net):
        # 1-D views of each layer's dL/dW (contiguous blocks of grads_flat)
        self._views = [layer.grads["W"].reshape(-1) for layer in net.layers]
        self._sums = [0.0] * len(self._views)
        self._count = 0

    def start(self) -> None:
        """Forget the previous epoch's batches."""
        self._sums = [0.0] * len(self._views)
        self._count = 0

    def add(self) -> None:
        dot, sqrt, sums = np.dot, math.sqrt, self._sums
        for i, g in enumerate(self._views):
            sums[i] += sqrt(dot(g, g))
        self._count += 1

    def means(self) -> list[float]:
        """The means (empty when no batch was added: the epoch diverged before one)."""
        return [s / self._count for s in self._sums] if self._count else []


class LearningRateFolding:
    """Per batch ``(loss scale, prescaled)``: whether the gradient arrives as ``lr * g``.

    Why: for plain SGD without L2 or clipping the loss folds the learning
    rate into its gradient's ``1 / batch`` factor, backpropagation yields
    ``lr * g`` and the update is one subtraction (a pass over the parameters
    saved per step). Not at the steps whose gradient norms the record
    averages, which must see ``g`` itself, nor at a rate of 0.
    """

    def __init__(
        self, optimizer, l2: float, clip: float | None, n_batches: int, norm_steps: list[int]
    ):
        self.enabled = optimizer.takes_prescaled and not l2 and clip is None
        self.n_batches, self.norm_steps = n_batches, norm_steps

    def scales(self, lr: float) -> list[tuple[float, bool]]:
        if not (self.enabled and lr > 0):
            return [(1.0, False)] * self.n_batches
        scales = [(lr, True)] * self.n_batches
        for i in self.norm_steps:
            scales[i] = (1.0, False)
        return scales


class BatchLosses:
    """Each batch's data loss (taken before its update) and ``dL/dO``; ``train_loss``
    is their mean over the epoch."""

    def __init__(self, loss: Loss, bounds: list[tuple[int, int]]):
        self.values = np.empty(len(bounds), np.float64)
        self._forward_backward = loss.forward_backward

    def batch(self, i: int, O: np.ndarray, Y: np.ndarray, dO: np.ndarray, scale: float):
        """Batch ``i``'s loss (finite iff it did not diverge); ``scale * dL/dO`` into ``dO``."""
        loss = self.values[i] = self._forward_backward(O, Y, dO, scale)
        return loss

    def epoch_mean(self) -> float:
        return float(self.values.mean())


class DeferredCrossEntropy(BatchLosses):
    """Cross-entropy with its logarithms taken at the epoch's end.

    Why: per batch only the gradient and the finite check are needed (see
    ``CrossEntropy.gradient``); the epoch's batch losses then come from three
    calls over all rows instead of a log and two reductions per batch. Until
    ``epoch_mean`` the values hold each batch's picked sum. (Only for
    ``CrossEntropy`` itself: a subclass may compute its loss its own way.)
    """

    def __init__(self, loss: CrossEntropy, bounds: list[tuple[int, int]], dtype):
        super().__init__(loss, bounds)
        self._gradient = loss.gradient
        n = bounds[-1][1]
        self.row_sums = np.empty(n, dtype)
        self._row_sum_views = [self.row_sums[s:e].reshape(-1, 1) for s, e in bounds]
        self._starts = np.array([s for s, _ in bounds])
        self._sizes = np.array([e - s for s, e in bounds], np.float64)

    def batch(self, i, O, Y, dO, scale):
        loss = self.values[i] = self._gradient(O, Y, dO, scale, self._row_sum_views[i])
        return loss

    def epoch_mean(self) -> float:
        log_sums = np.add.reduceat(np.log(self.row_sums), self._starts, dtype=np.float64)
        np.subtract(log_sums, self.values, out=self.values)
        self.values /= self._sizes
        return float(self.values.mean())


def batch_losses(loss: Loss, bounds: list[tuple[int, int]], dtype) -> BatchLosses:
    """The per-batch losses of ``loss``: deferred logarithms for cross-entropy."""
    if type(loss) is CrossEntropy:
        return DeferredCrossEntropy(loss, bounds, dtype)
    return BatchLosses(loss, bounds)


class RunningAccuracy:
    """``train_metrics="running"``: the share of rows classified right as their batch
    was trained (before its update), like Keras and Lightning report it.

    Why: the outputs are computed by the step anyway, so it costs one argmax
    per batch instead of a pass over the training set.
    """

    def __init__(self, net, labels: np.ndarray, bounds: list[tuple[int, int]]):
        self.labels = labels
        self.shuffled = np.empty_like(labels)
        self.predicted = np.empty(len(labels), np.int64)
        self._views = [self.predicted[s:e] for s, e in bounds]
        self._predict_labels = net.predict_labels

    def shuffle(self, perm: np.ndarray) -> None:
        np.take(self.labels, perm, out=self.shuffled, mode="clip")  # type: ignore[call-overload]

    def observe(self, i: int, O: np.ndarray) -> None:
        self._predict_labels(O, out=self._views[i])

    def value(self) -> float:
        return int(np.count_nonzero(self.predicted == self.shuffled)) / len(self.labels)
