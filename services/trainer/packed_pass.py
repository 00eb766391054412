"""The stacked training pass of a pack: k networks' forward and backward in one set of calls.

``backprop.TrainingPass`` with a leading trial axis: every weight is a
``(k, fan_in, fan_out)`` view into the pack's ``(k, n_params)`` parameter
array (row ``r`` is trial ``r``'s ``params_flat``), every intermediate a
``(k, batch, units)`` buffer, and each product one ``np.matmul`` over the
stack. Each slice of each operand is laid out exactly as the solo pass lays
out its 2-D operand (C-ordered, or the transpose of a C-ordered block), so
``np.matmul`` hands BLAS the same call per slice, with the same transpose
flags, as the solo pass's ``np.dot``: the slices come out bit for bit equal
(checked by ``tests/unit/trainer/test_packed.py``). Element-wise calls take
per-trial scalars as ``(k, 1, 1)`` arrays of the network's dtype, which is
what NumPy casts a Python float to in the solo pass.

Dropout: each trial draws its masks from its own generator into its own
slice, as the solo pass does; a trial with rate 0 (or one that left the pack
or diverged mid-epoch) draws nothing and its scale stays 1, and ``x * 1`` is
``x`` exactly.

``PackedBatches`` gathers each trial's shuffled epoch (one ``take`` for all
trials); ``packed_losses`` are the losses with a trial axis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .losses import MSE, BinaryCrossEntropy, CrossEntropy

_RELU, _LINEAR, _OTHER = 0, 1, 2


def offset_in(view: np.ndarray, base: np.ndarray) -> int:
    """Element offset of ``view`` inside the flat vector ``base``."""
    return (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // (
        base.itemsize
    )


def stacked(view: np.ndarray, base: np.ndarray, S: np.ndarray) -> np.ndarray:
    """The ``(k, *view.shape)`` view of ``S`` (k, n) whose row 0 is ``base`` and
    whose slices sit where ``view`` sits in ``base``."""
    off = offset_in(view, base)
    return S[:, off : off + view.size].reshape((len(S),) + view.shape)


class PackedPass:
    """Forward and backward for batches of ``n`` rows through the stacked networks.

    Parameters
    ----------
    net : Network
        Trial 0's network, bound to row 0 of ``P`` / ``G`` (its layout is every row's).
    P, G : ndarray (k, n_params)
        The stacked parameters and gradients.
    n : int
        Rows per batch.
    drop : ndarray (k, n_layers)
        Each trial's dropout rate per layer.
    """

    def __init__(self, net, P: np.ndarray, G: np.ndarray, n: int, drop: np.ndarray):
        layers, dtype = net.layers, net.dtype
        k = len(P)
        base_p, base_g = net.params_flat, net.grads_flat
        self.dtype = dtype
        self._ones = np.ones(n, dtype)
        #: per layer with dropout, the rows that draw masks (set by the pack)
        self.draw_rows: list[list[int]] = []
        self.rngs: list[np.random.Generator] = []
        fwd: list[tuple[Any, ...]] = []
        bwd: list[list[Any]] = []
        last = len(layers) - 1
        for i, layer in enumerate(layers):
            name = layer.activation.name
            kind = _RELU if name == "relu" else _LINEAR if name == "linear" else _OTHER
            if i == 0:
                W, gW = (
                    stacked(net.first_block, base_p, P),
                    stacked(net.first_block_grad, base_g, G),
                )
                b = gb = None
            else:
                W, gW = stacked(layer.params["W"], base_p, P), stacked(layer.grads["W"], base_g, G)
                b = stacked(layer.params["b"], base_p, P)[:, None, :]  # (k, 1, n_out)
                gb = stacked(layer.grads["b"], base_g, G)  # (k, n_out)
            WT = W.transpose(0, 2, 1)
            if i == last:  # O^T = W^T @ A^T into C-ordered (k, n_out, n): each O is F-ordered
                Z = np.empty((k, layer.n_out, n), dtype).transpose(0, 2, 1)
            else:
                Z = np.empty((k, n, layer.n_out), dtype)
            A = Z if kind != _OTHER else np.empty_like(Z)
            zeros = np.zeros_like(Z) if kind == _RELU else None
            mask = np.empty_like(Z, dtype=bool) if kind == _RELU else None
            rates = drop[:, i]
            drop_state = None
            if rates.any():
                noise = np.ones_like(Z)  # rows that never draw keep 1 >= 0: scale 1
                p = rates.astype(dtype).reshape(k, 1, 1)
                inv_keep = np.array([dtype.type(1.0 / (1.0 - q)) for q in rates], dtype)
                rows = [r for r in range(k) if rates[r] > 0]  # the pack removes rows that stop
                self.draw_rows.append(rows)
                drop_state = (
                    noise,
                    np.empty_like(Z),
                    np.empty_like(Z),
                    p,
                    inv_keep.reshape(k, 1, 1),
                    rows,
                )
            dX = np.empty((k, n, layer.n_in), dtype) if i > 0 else None
            fwd.append(
                (W, b, Z, A, kind, layer.activation, zeros, drop_state, WT if i == last else None)
            )
            bwd.append([None, WT, gW, gb, Z, A, kind, layer.activation, mask, drop_state, dX])
        for i in range(1, len(layers)):
            prev_drop = fwd[i - 1][7]
            bwd[i][0] = (prev_drop[2] if prev_drop is not None else fwd[i - 1][3]).transpose(
                0, 2, 1
            )
        self._fwd = fwd
        self._bwd = [tuple(entry) for entry in reversed(bwd)]
        n_out = layers[-1].n_out
        self.dO = np.empty((k, n_out, n), dtype).transpose(0, 2, 1)  # F-ordered slices like O
        #: ``dO`` as one column per trial (k, n_out * n, 1), for per-trial dot products
        self.dO_column = self.dO.transpose(0, 2, 1).reshape(k, n_out * n, 1)
        self.dO_row = self.dO_column.reshape(k, 1, n_out * n)
        self.X: np.ndarray | None = None

    def forward(self, X: np.ndarray) -> np.ndarray:
        """The outputs ``O`` (k, n, n_out) for the stacked batches ``X`` (k, n, n_in + 1)."""
        self.X = X
        matmul, add, maximum = np.matmul, np.add, np.maximum
        A = X
        for W, b, Z, A_out, kind, act, zeros, drop, WT in self._fwd:
            if WT is None:
                matmul(A, W, out=Z)
            else:  # the output layer: O^T = W^T @ A^T
                matmul(WT, A.transpose(0, 2, 1), out=Z.transpose(0, 2, 1))
            if b is not None:
                add(Z, b, Z)
            if kind == _RELU:
                A = maximum(Z, zeros, out=A_out)
            elif kind == _LINEAR:
                A = Z
            else:
                A = act.forward(Z, out=A_out)
            if drop is not None:
                A = self._dropout(A, drop)
        return A

    def _dropout(self, A: np.ndarray, drop: tuple) -> np.ndarray:
        """Inverted dropout, each trial's mask from its own generator (solo: ``_dropout``)."""
        noise, scale, out, p, inv_keep, rows = drop
        rngs = self.rngs
        for r in rows:
            rngs[r].random(out=noise[r], dtype=noise.dtype)
        np.greater_equal(noise, p, out=scale, casting="unsafe")
        scale *= inv_keep
        return np.multiply(A, scale, out=out)

    def backward(self, dO: np.ndarray) -> None:
        """Fill every trial's gradients from ``dO`` (overwritten)."""
        matmul, multiply, greater = np.matmul, np.multiply, np.greater
        ones, zero = self._ones, self.dtype.type(0)
        d = dO
        for XT, WT, gW, gb, Z, A, kind, act, mask, drop, dX in self._bwd:
            if drop is not None:
                multiply(d, drop[1], d)
            if kind == _RELU:
                multiply(d, greater(A, zero, mask), d)
            elif kind == _OTHER:
                d = act.backward(d, Z, A, out=d)
            if XT is None:  # the first layer: [dW_0; db_0] = [X, 1].T @ dZ
                matmul(self.X.transpose(0, 2, 1), d, out=gW)  # type: ignore[union-attr]
            else:
                matmul(XT, d, out=gW)
                matmul(ones, d, out=gb)
            if dX is not None:
                d = matmul(d, WT, out=dX)


class PackedBatches:
    """Each trial's epoch in its own shuffled order, batch by batch as ``(X, Y, Y_column,
    pass)``: ``X`` (k, n, n_in + 1), ``Y`` (k, n, n_out) with F-ordered slices (as
    ``epoch.ShuffledTargets`` lays them out), ``Y_column`` the same memory as (k, 1,
    n_out * n). Gathered once per epoch when the stacked set fits ``gather_bytes``,
    else batch by batch (the same batches)."""

    def __init__(self, X_ones, Y, bounds, k: int, passes: dict, gather_bytes: int):
        n, C = Y.shape
        self.X, self.Y, self.k, self.C, self.bounds = X_ones, Y, k, C, bounds
        self.passes = passes
        self.per_epoch = k * (X_ones.nbytes + Y.nbytes) <= gather_bytes
        self._perms = np.zeros((k, n), np.int64)
        bs = bounds[0][1]
        self.bs, self.full = bs, (n // bs) * bs
        if self.per_epoch:
            self._Xe = np.empty((k,) + X_ones.shape, X_ones.dtype)
            self._rows = np.empty((k, n, C), Y.dtype)
            self._flat = np.empty((k, n * C), Y.dtype)
            self._views = []
            for s, e in bounds:
                block = self._flat[:, s * C : e * C].reshape(k, C, e - s)
                self._views.append(
                    (
                        self._Xe[:, s:e],
                        block.transpose(0, 2, 1),
                        block.reshape(k, 1, C * (e - s)),
                        passes[e - s],
                    )
                )
        else:
            sizes = {e - s for s, e in bounds}
            d = X_ones.shape[1]
            self._Xb = {m: np.empty((k, m, d), X_ones.dtype) for m in sizes}
            self._Yb = {m: np.empty((k, m, C), Y.dtype) for m in sizes}
            self._YbT = {m: np.empty((k, C, m), Y.dtype) for m in sizes}

    def __len__(self) -> int:
        return len(self.bounds)

    def shuffle(self, perms: np.ndarray) -> None:
        """Take each trial's order (row ``r``: a permutation of the rows)."""
        self._perms = perms
        if not self.per_epoch:
            return
        # mode="clip": with the default "raise" NumPy buffers `out` (see epoch.Batches)
        np.take(self.X, perms, axis=0, out=self._Xe, mode="clip")
        np.take(self.Y, perms, axis=0, out=self._rows, mode="clip")
        k, C, bs, full, rows, flat = self.k, self.C, self.bs, self.full, self._rows, self._flat
        if full:
            np.copyto(
                flat[:, : full * C].reshape(k, full // bs, C, bs),
                rows[:, :full].reshape(k, full // bs, bs, C).transpose(0, 1, 3, 2),
            )
        if full < rows.shape[1]:
            np.copyto(flat[:, full * C :].reshape(k, C, -1), rows[:, full:].transpose(0, 2, 1))

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, PackedPass]]:
        return iter(self._views) if self.per_epoch else self._gathered_per_batch()

    def _gathered_per_batch(self):
        perms, take, k, C = self._perms, np.take, self.k, self.C
        for s, e in self.bounds:
            m = e - s
            Xb = take(self.X, perms[:, s:e], axis=0, out=self._Xb[m], mode="clip")
            Yb = take(self.Y, perms[:, s:e], axis=0, out=self._Yb[m], mode="clip")
            YT = self._YbT[m]
            np.copyto(YT, Yb.transpose(0, 2, 1))
            yield Xb, YT.transpose(0, 2, 1), YT.reshape(k, 1, C * m), self.passes[m]


def _dots(a_row: np.ndarray, b_column: np.ndarray) -> np.ndarray:
    """Per trial ``a . b`` of (k, 1, L) and (k, L, 1): one BLAS dot per slice, the
    call ``np.vdot`` makes for the solo ``losses.sum_product``."""
    return np.matmul(a_row, b_column)[:, 0, 0]


class PackedLosses:
    """Each trial's batch losses (k, n_batches) and ``scale * dL/dO``; see
    ``epoch.BatchLosses`` (mean squared error, binary cross-entropy)."""

    def __init__(self, loss, bounds: list[tuple[int, int]], k: int, n_out: int):
        self.loss = loss
        self.values = np.empty((k, len(bounds)), np.float64)
        self.n_out = n_out

    def factor(self, scale: float, m: int) -> float:
        """The factor of the gradient of a batch of ``m`` rows, as the solo loss computes
        it from its ``scale`` (MSE: ``2 * scale / size``, BCE: ``scale / size``)."""
        if type(self.loss) is MSE:
            return 2.0 * scale / (m * self.n_out)
        return scale / (m * self.n_out)

    def batch(self, i: int, O, Y, Y_row, dO, dO_row, dO_column, scale) -> np.ndarray:
        """Batch ``i``'s loss per trial (k,); ``scale * dL/dO`` into ``dO``."""
        if type(self.loss) is MSE:  # losses.MSE.forward_backward with a trial axis
            D = np.subtract(O, Y, out=dO)
            loss = _dots(dO_row, dO_column) / (O.shape[1] * O.shape[2])
            D *= scale
        else:  # losses.BinaryCrossEntropy
            loss = np.mean(np.maximum(O, 0) - O * Y + np.log1p(np.exp(-np.abs(O))), axis=(1, 2))
            P = np.multiply(O, 0.5, out=dO)
            np.tanh(P, out=P)
            P += 1.0
            P *= 0.5
            P -= Y
            P *= scale
        self.values[:, i] = loss
        return loss

    def epoch_mean(self, r: int) -> float:
        return float(self.values[r].mean())


class PackedCrossEntropy(PackedLosses):
    """``epoch.DeferredCrossEntropy`` with a trial axis: per batch the gradient and
    the sum of the true classes' shifted logits; the logarithms once per epoch."""

    def __init__(self, loss, bounds, k, n_out, dtype):
        super().__init__(loss, bounds, k, n_out)
        n = bounds[-1][1]
        self.row_sums = np.empty((k, n), dtype)
        self._row_sum_views = [self.row_sums[:, s:e].reshape(k, e - s, 1) for s, e in bounds]
        self._starts = np.array([s for s, _ in bounds])
        self._sizes = np.array([e - s for s, e in bounds], np.float64)

    def factor(self, scale: float, m: int) -> float:
        return scale / m  # losses.CrossEntropy.gradient

    def batch(self, i, O, Y, Y_row, dO, dO_row, dO_column, scale):
        S = np.subtract(O, np.maximum.reduce(O, axis=2, keepdims=True), out=dO)
        picked = self.values[:, i] = _dots(Y_row, dO_column)
        E = np.exp(S, out=dO)
        s = np.add.reduce(E, axis=2, keepdims=True, out=self._row_sum_views[i])
        E /= s
        E -= Y
        E *= scale
        return picked

    def epoch_mean(self, r: int) -> float:
        values = self.values[r]
        log_sums = np.add.reduceat(np.log(self.row_sums[r]), self._starts, dtype=np.float64)
        np.subtract(log_sums, values, out=values)
        values /= self._sizes
        return float(values.mean())


def packed_losses(loss, bounds, k: int, n_out: int, dtype) -> PackedLosses:
    """The packed form of ``loss`` (a ``ValueError`` for a loss it does not know)."""
    if type(loss) is CrossEntropy:
        return PackedCrossEntropy(loss, bounds, k, n_out, dtype)
    if type(loss) in (MSE, BinaryCrossEntropy):
        return PackedLosses(loss, bounds, k, n_out)
    raise ValueError(f"no packed form of the loss {loss.name!r}")
