"""Losses, each the mean over the batch (PyTorch's ``reduction="mean"``).

A loss sees the network's output ``O`` of shape ``(batch, k)`` and targets
``Y`` of the same shape (one-hot rows for cross-entropy, 0/1 for binary
cross-entropy, real values for MSE). Cross-entropy and binary cross-entropy
are fused with their output activation: ``O`` are then logits, which is both
cheaper and numerically stable, and the gradient is simply
``(activation(O) - Y) / batch``.

``value(O, Y)`` returns the loss; ``forward_backward(O, Y, dO, scale=1.0)``
returns it and writes ``scale * dL/dO`` into ``dO`` (which may be ``O``
itself). The scale rides on the gradient's own ``1 / batch`` factor, so it
costs nothing: plain SGD folds its learning rate in there (see ``fit``).
"""

from __future__ import annotations

import numpy as np


def sum_product(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` for two arrays of one shape, as one BLAS dot product.

    ``np.vdot`` flattens in C order, copying an F-ordered array (the training
    pass's outputs are F-ordered); two F-ordered arrays are read through their
    transposes instead, which pairs the same elements without a copy.
    """
    if (
        a.flags.f_contiguous
        and b.flags.f_contiguous
        and not (a.flags.c_contiguous and b.flags.c_contiguous)
    ):
        return np.vdot(a.T, b.T)
    return np.vdot(a, b)


class Loss:
    name = "loss"
    #: name of the output activation the loss is fused with (None: not fused)
    fused_activation: str | None = None

    def value(self, O: np.ndarray, Y: np.ndarray) -> float:
        raise NotImplementedError

    def forward_backward(
        self, O: np.ndarray, Y: np.ndarray, dO: np.ndarray, scale: float = 1.0
    ) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits.

    ``L = mean_i( logsumexp(Z_i) - Z_i . Y_i )`` with one-hot ``Y``, computed
    with the row max subtracted so that ``exp`` never overflows.
    """

    name = "cross_entropy"
    fused_activation = "softmax"

    def value(self, Z, Y):
        S = Z - np.maximum.reduce(Z, axis=1, keepdims=True)  # shifted logits
        lse = np.log(np.add.reduce(np.exp(S), axis=1))  # (batch,)
        return float((np.add.reduce(lse) - sum_product(Y, S)) / Z.shape[0])

    # dL/dZ = (softmax(Z) - Y) / batch
    def forward_backward(self, Z, Y, dZ, scale=1.0):
        s = np.empty((Z.shape[0], 1), Z.dtype)
        picked = self.gradient(Z, Y, dZ, scale, s)
        return (np.add.reduce(np.log(s), axis=None) - picked) / Z.shape[0]

    def gradient(self, Z, Y, dZ, scale, row_sums) -> float:
        """``forward_backward`` short of the loss: ``scale * dL/dZ`` into ``dZ``,
        ``s_i = sum_j exp(Z_ij - max_j Z_ij)`` into ``row_sums`` (batch, 1), and
        the sum of the true classes' shifted logits returned. The batch loss is
        ``(sum_i log s_i - picked) / batch``; ``picked`` is finite exactly when
        it is (any non-finite logit makes ``Y . S`` NaN, and ``1 <= s_i <= k``
        otherwise), so the training loop can check every batch at once and
        take the logarithms of a whole epoch in one call."""
        n = Z.shape[0]
        S = np.subtract(Z, np.maximum.reduce(Z, axis=1, keepdims=True), out=dZ)
        picked = sum_product(Y, S)  # sum_i of the true class's shifted logit
        E = np.exp(S, out=dZ)
        s = np.add.reduce(E, axis=1, keepdims=True, out=row_sums)
        E /= s  # softmax
        E -= Y
        E *= E.dtype.type(scale / n)
        return picked


class BinaryCrossEntropy(Loss):
    """Sigmoid binary cross-entropy from logits, the mean over all elements.

    ``L = mean( max(z, 0) - z y + log(1 + exp(-|z|)) )``, stable for saturated
    sigmoids (PyTorch's ``BCEWithLogitsLoss``).
    """

    name = "binary_cross_entropy"
    fused_activation = "sigmoid"

    def value(self, Z, Y):
        return float(np.mean(np.maximum(Z, 0) - Z * Y + np.log1p(np.exp(-np.abs(Z)))))

    # dL/dz = (sigmoid(z) - y) / size
    def forward_backward(self, Z, Y, dZ, scale=1.0):
        loss = self.value(Z, Y)
        P = np.multiply(Z, 0.5, out=dZ)
        np.tanh(P, out=P)  # sigmoid(z) = (1 + tanh(z / 2)) / 2, no overflow
        P += 1.0
        P *= 0.5
        P -= Y
        P *= P.dtype.type(scale / Z.size)
        return loss


class MSE(Loss):
    """Mean squared error over all elements: ``L = mean((O - Y)^2)``."""

    name = "mse"

    def value(self, O, Y):
        D = O - Y
        return float(sum_product(D, D) / D.size)

    # dL/dO = 2 (O - Y) / size
    def forward_backward(self, O, Y, dO, scale=1.0):
        D = np.subtract(O, Y, out=dO)
        loss = float(sum_product(D, D) / D.size)
        D *= D.dtype.type(2.0 * scale / D.size)
        return loss


LOSSES: dict[str, type[Loss]] = {
    "cross_entropy": CrossEntropy,
    "binary_cross_entropy": BinaryCrossEntropy,
    "mse": MSE,
}


def get_loss(name: str) -> Loss:
    """Return a new loss for ``name``; unknown names list the known ones."""
    try:
        return LOSSES[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}") from None
