"""The dense (fully connected) layer, with inverted dropout.

Forward::

    Z = X @ W + b          # (batch, n_out) = (batch, n_in) @ (n_in, n_out) + (n_out,)
    A = g(Z)               # activation
    A = A * mask / (1 - p) # training only, hidden layers only (inverted dropout)

Backward, given ``dA = dL/dA`` of shape ``(batch, n_out)``::

    dZ = dA * g'(Z)        # (batch, n_out)
    dW = X.T @ dZ          # (n_in, n_out)
    db = 1^T dZ            # (n_out,), the sum over the batch
    dX = dZ @ W.T          # (batch, n_in)

``params`` and ``grads`` are dicts keyed ``"W"`` and ``"b"``. When a layer is
part of a ``Network`` they are views into the network's flat parameter and
gradient vectors, so an optimizer updates every layer in a few calls; write
into them (``params["W"][...] = W_new``) rather than rebinding them.

In training mode the layer reuses buffers preallocated per batch size; the
arrays it returns are overwritten by the next training step. The products
there are ``np.dot(..., out=...)``: for 2-D operands it is the same BLAS call
as ``@`` with less dispatch overhead, which counts at small batch sizes.
"""

from __future__ import annotations

import numpy as np

from .activations import Activation, get_activation


class _Buffers:
    """Per-batch-size scratch arrays of a layer (training mode only)."""

    __slots__ = ("Z", "A", "dX", "ones", "noise", "drop", "D")
    noise: np.ndarray | None
    drop: np.ndarray | None
    D: np.ndarray | None

    def __init__(self, n: int, n_in: int, n_out: int, dtype, dropout: float):
        self.ones = np.ones(n, dtype)  # sums the batch's rows with one BLAS call
        self.Z = np.empty((n, n_out), dtype)
        self.A = np.empty((n, n_out), dtype)
        self.dX = np.empty((n, n_in), dtype)
        if dropout > 0:
            self.noise = np.empty((n, n_out), dtype)
            self.drop = np.empty((n, n_out), dtype)  # mask / (1 - p)
            self.D = np.empty((n, n_out), dtype)  # A after dropout
        else:
            self.noise = self.drop = self.D = None


class Dense:
    """A fully connected layer ``A = g(X @ W + b)``.

    Parameters
    ----------
    n_in, n_out : int
        Input and output widths; ``W`` has shape ``(n_in, n_out)``, ``b`` ``(n_out,)``.
    activation : str or Activation
        ``g``; see ``activations.ACTIVATIONS``.
    dropout : float
        Probability of zeroing a unit in training (inverted dropout); 0 disables.
    dtype : numpy dtype
        ``float32`` (default) or ``float64``.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        activation: str | Activation = "linear",
        dropout: float = 0.0,
        dtype=np.float32,
    ):
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.activation = get_activation(activation) if isinstance(activation, str) else activation
        self._identity = self.activation.name == "linear"
        self.dropout = float(dropout)
        self.dtype = np.dtype(dtype)
        self.params = {
            "W": np.zeros((self.n_in, self.n_out), self.dtype),
            "b": np.zeros(self.n_out, self.dtype),
        }
        self.grads = {"W": np.zeros_like(self.params["W"]), "b": np.zeros_like(self.params["b"])}
        self._buffers: dict[int, _Buffers] = {}
        self._cache: tuple | None = None  # (X, Z, A, drop) of the last training forward

    def __repr__(self) -> str:
        return (
            f"Dense({self.n_in}, {self.n_out}, activation={self.activation.name!r}, "
            f"dropout={self.dropout})"
        )

    def _buffers_for(self, n: int) -> _Buffers:
        buf = self._buffers.get(n)
        if buf is None:
            buf = self._buffers[n] = _Buffers(n, self.n_in, self.n_out, self.dtype, self.dropout)
        return buf

    def forward(
        self, X: np.ndarray, training: bool = False, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Compute ``A = g(X @ W + b)`` for ``X`` of shape ``(batch, n_in)``.

        With ``training=True`` the inputs and outputs are cached for
        ``backward`` and dropout (if any) draws its mask from ``rng``.
        """
        W, b = self.params["W"], self.params["b"]
        if not training:
            Z = X @ W
            Z += b
            return self.activation.forward(Z, out=Z)
        if X.dtype != self.dtype:  # np.dot's out= does not cast
            X = X.astype(self.dtype)
        buf = self._buffers_for(X.shape[0])
        Z = np.dot(X, W, out=buf.Z)  # (batch, n_out)
        Z += b
        A = Z if self._identity else self.activation.forward(Z, out=buf.A)
        drop = None
        if self.dropout > 0:
            if rng is None:
                raise ValueError("dropout in training needs a random generator")
            assert buf.noise is not None and buf.drop is not None
            rng.random(out=buf.noise, dtype=self.dtype)
            drop = np.greater_equal(
                buf.noise, self.dtype.type(self.dropout), out=buf.drop, casting="unsafe"
            )
            drop *= self.dtype.type(1.0 / (1.0 - self.dropout))
            A = np.multiply(A, drop, out=buf.D)
        self._cache = (X, Z, Z if self._identity else buf.A, drop, buf)
        return A

    def backward(self, dA: np.ndarray, need_dX: bool = True) -> np.ndarray | None:
        """Fill ``grads`` from ``dA`` of shape ``(batch, n_out)`` and return ``dX``.

        ``dA`` may be overwritten. Returns ``None`` when ``need_dX`` is false
        (the first layer has nobody to pass ``dX`` to).
        """
        if self._cache is None:
            raise RuntimeError("backward() needs a forward(training=True) first")
        X, Z, A, drop, buf = self._cache
        if dA.dtype != self.dtype:  # np.dot's out= does not cast
            dA = dA.astype(self.dtype)
        if drop is not None:
            dA = np.multiply(dA, drop, out=dA)
        dZ = dA if self._identity else self.activation.backward(dA, Z, A, out=dA)
        np.dot(X.T, dZ, out=self.grads["W"])  # (n_in, n_out)
        np.dot(buf.ones, dZ, out=self.grads["b"])  # (n_out,) = 1^T dZ, the column sums
        if not need_dX:
            return None
        return np.dot(dZ, self.params["W"].T, out=buf.dX)  # (batch, n_in)
