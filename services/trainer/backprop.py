"""The training pass: feed-forward and backpropagation through every layer.

For each layer, with ``X`` its input (the batch, or the previous layer's
output) and ``A`` its output, the forward pass is::

    Z = X @ W + b          # (batch, n_out) = (batch, n_in) @ (n_in, n_out) + (n_out,)
    A = g(Z)               # activation
    A = A * mask / (1 - p) # inverted dropout, hidden layers in training only

and the backward pass, from ``dA = dL/dA`` of the last layer's output down::

    dA = dA * mask / (1 - p)   # dropout: the same units, the same scale
    dZ = dA * g'(Z)            # ReLU: dA where A > 0, else 0
    dW = X.T @ dZ              # (n_in, n_out)
    db = 1^T dZ                # (n_out,), the column sums, as one BLAS call
    dX = dZ @ W.T              # (batch, n_in): the previous layer's dA

(the first layer's ``dX`` is never needed and not computed).

A ``TrainingPass`` serves one batch size: it owns every intermediate array
(``Z``, ``A``, masks, ``dX``, the loss gradient ``dO``) and holds each
layer's operands in a tuple, so that a training step is the ~30 NumPy calls
above and little else; at small batch sizes the Python around the calls
would otherwise cost as much as the arithmetic. ReLU, the common hidden
activation, is inlined (``maximum`` against a zeros array of ``Z``'s shape,
which NumPy vectorizes better than the scalar 0); any other activation goes
through its ``Activation.forward`` / ``backward``. The arrays it returns are
overwritten by the next step of the same batch size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_RELU, _LINEAR, _OTHER = 0, 1, 2


class TrainingPass:
    """Forward and backward for batches of ``n`` rows through ``net``'s layers.

    The first layer's bias is folded into its matrix product: the batch
    comes with a column of ones appended (``fit`` appends it to the training
    set once; ``with_ones`` copies a batch into a buffer that has it) and is
    multiplied by ``net.first_block = [W_0; b_0]``, whose gradient
    ``[X, 1].T @ dZ = [dW_0; db_0]`` is then one product too. (For the other
    layers a column of ones would make ``A`` rows of odd length, which costs
    the products and the ReLU more than the bias add.)

    Parameters
    ----------
    net : Network
        Its parameter views and dropout rates are bound once, so parameters
        must be written in place (as the optimizer does).
    n : int
        Rows per batch.
    """

    def __init__(self, net, n: int):
        layers = net.layers
        self.n = n
        dtype = net.dtype
        self.dtype = dtype
        self.X: np.ndarray | None = None  # the last forward's input, ones column included
        self.n_in = layers[0].n_in
        self._X1 = np.ones((n, self.n_in + 1), dtype)  # see with_ones
        self._ones = np.ones(n, dtype)  # 1^T dZ as a BLAS call
        fwd: list[tuple[Any, ...]] = []
        bwd: list[list[Any]] = []
        last = len(layers) - 1
        for i, layer in enumerate(layers):
            name = layer.activation.name
            kind = _RELU if name == "relu" else _LINEAR if name == "linear" else _OTHER
            if i == 0:
                W, b, gW, gb = net.first_block, None, net.first_block_grad, None
            else:
                W, b = layer.params["W"], layer.params["b"]
                gW, gb = layer.grads["W"], layer.grads["b"]
            # The output layer computes O^T = W^T @ A^T into a C-ordered
            # (n_out, batch) buffer, so O is F-ordered: the loss's per-row
            # reductions then run along contiguous memory (3x faster for 10
            # classes) and BLAS takes O, dO as they are.
            WT = W.T if i == last else None
            if i == last:
                Z = np.empty((layer.n_out, n), dtype).T
            else:
                Z = np.empty((n, layer.n_out), dtype)
            # ReLU overwrites Z (its derivative needs only A > 0)
            A = Z if kind != _OTHER else np.empty_like(Z)
            zeros = np.zeros_like(Z) if kind == _RELU else None
            mask = np.empty_like(Z, dtype=bool) if kind == _RELU else None
            p = layer.dropout
            drop = (
                (
                    np.empty_like(Z),
                    np.empty_like(Z),
                    np.empty_like(Z),
                    dtype.type(p),
                    dtype.type(1.0 / (1.0 - p)),
                )
                if p > 0
                else None
            )
            dX = np.empty((n, layer.n_in), dtype) if i > 0 else None
            fwd.append((W, b, Z, A, kind, layer.activation, zeros, drop, WT))
            # X.T of layer i > 0 is the previous layer's output after dropout
            bwd.append(
                [None, layer.params["W"].T, gW, gb, Z, A, kind, layer.activation, mask, drop, dX]
            )
        for i in range(1, len(layers)):
            prev_drop = fwd[i - 1][7]
            bwd[i][0] = (prev_drop[2] if prev_drop is not None else fwd[i - 1][3]).T
        self._fwd = fwd
        self._bwd = [tuple(entry) for entry in reversed(bwd)]
        self.dO = np.empty((layers[-1].n_out, n), dtype).T  # F-ordered like O

    def forward(self, X: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """The outputs ``O`` (batch, n_out) for ``X``; caches what ``backward`` needs.

        ``X`` is the batch with a column of ones appended (``with_ones``
        writes one into the pass's own buffer). ``rng`` draws the dropout
        masks (required when a layer has dropout).
        """
        self.X = X
        dot, add, maximum = np.dot, np.add, np.maximum
        A = X
        for W, b, Z, A_out, kind, act, zeros, drop, WT in self._fwd:
            if WT is None:
                dot(A, W, Z)
            else:  # the output layer: O^T = W^T @ A^T
                dot(WT, A.T, Z.T)
            if b is not None:  # the first layer's is in W
                add(Z, b, Z)
            if kind == _RELU:
                A = maximum(Z, zeros, out=A_out)
            elif kind == _LINEAR:
                A = Z
            else:
                A = act.forward(Z, out=A_out)
            if drop is not None:
                A = _dropout(A, drop, rng)
        return A

    def with_ones(self, X: np.ndarray) -> np.ndarray:
        """``[X, 1]`` for a batch ``X`` of ``n_in`` columns, in the pass's buffer."""
        if X.shape != (self.n, self.n_in):
            raise ValueError(f"expected a batch of shape {(self.n, self.n_in)}, got {X.shape}")
        self._X1[:, :-1] = X
        return self._X1

    def backward(self, dO: np.ndarray) -> None:
        """Fill every layer's ``grads`` from ``dO = dL/dO`` (overwritten)."""
        dot, multiply, greater = np.dot, np.multiply, np.greater
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
                dot(self.X.T, d, gW)  # type: ignore[union-attr]
            else:
                dot(XT, d, gW)
                dot(ones, d, gb)
            if dX is not None:
                d = dot(d, WT, dX)


def _dropout(A: np.ndarray, drop: tuple, rng: np.random.Generator | None) -> np.ndarray:
    """Inverted dropout into the pass's buffers: ``A * (noise >= p) / (1 - p)``."""
    if rng is None:
        raise ValueError("dropout in training needs a random generator")
    noise, scale, out, p, inv_keep = drop
    rng.random(out=noise, dtype=noise.dtype)
    np.greater_equal(noise, p, out=scale, casting="unsafe")
    scale *= inv_keep
    return np.multiply(A, scale, out=out)
