"""Activation functions, each with its derivative written right under it.

Every activation maps pre-activations ``Z`` of shape ``(batch, units)`` to
activations ``A`` of the same shape. ``forward`` may write into a preallocated
``out`` buffer (training) or in place, ``out=Z`` (evaluation);
``backward(dA, Z, A, out)`` turns the upstream gradient ``dA = dL/dA`` into
``dZ = dL/dZ`` and may write in place (``out`` may be ``dA`` itself).
Derivatives are expressed through whichever of ``Z`` and ``A`` is cheaper.
"""

from __future__ import annotations

import numpy as np


class Activation:
    """Base class: ``name`` is the registry key."""

    name = "activation"

    def forward(self, Z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def backward(
        self, dA: np.ndarray, Z: np.ndarray, A: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linear(Activation):
    """Identity: ``A = Z``."""

    name = "linear"

    def forward(self, Z, out=None):
        if out is None or out is Z:
            return Z
        np.copyto(out, Z)
        return out

    # dA/dZ = 1
    def backward(self, dA, Z, A, out=None):
        if out is None or out is dA:
            return dA
        np.copyto(out, dA)
        return out


class ReLU(Activation):
    """``A = max(Z, 0)``."""

    name = "relu"

    def __init__(self) -> None:
        self._zero_rows: dict[tuple, np.ndarray] = {}  # (width, dtype) -> zeros

    # Against a row of zeros that broadcasts over the batch, not the scalar 0:
    # NumPy's loop for two arrays is vectorized and 2-3x faster than the one for
    # an array and a scalar. (The training pass, ``backprop.TrainingPass``,
    # inlines ReLU against a zeros array of the whole batch's shape.)
    def forward(self, Z, out=None):
        key = (Z.shape[-1], Z.dtype)
        zeros = self._zero_rows.get(key)
        if zeros is None:
            zeros = self._zero_rows[key] = np.zeros(Z.shape[-1], Z.dtype)
        return np.maximum(Z, zeros, out=out)

    # dA/dZ = 1 where Z > 0 else 0
    def backward(self, dA, Z, A, out=None):
        return np.multiply(dA, A > 0, out=out)


class LeakyReLU(Activation):
    """``A = Z`` where ``Z > 0`` else ``alpha * Z`` (``alpha = 0.01`` as PyTorch)."""

    name = "leaky_relu"

    def __init__(self, alpha: float = 0.01):
        self.alpha = alpha

    # max(Z, alpha Z) equals the definition for 0 <= alpha < 1
    def forward(self, Z, out=None):
        return np.maximum(Z, self.alpha * Z, out=out)

    # dA/dZ = 1 where Z > 0 else alpha
    def backward(self, dA, Z, A, out=None):
        slope = np.where(Z > 0, 1.0, self.alpha).astype(dA.dtype, copy=False)
        return np.multiply(dA, slope, out=out)


class Sigmoid(Activation):
    """``A = 1 / (1 + exp(-Z))``, computed as ``(1 + tanh(Z/2)) / 2`` (no overflow)."""

    name = "sigmoid"

    def forward(self, Z, out=None):
        A = np.multiply(Z, 0.5, out=out)
        np.tanh(A, out=A)
        A += 1.0
        A *= 0.5
        return A

    # dA/dZ = A (1 - A)
    def backward(self, dA, Z, A, out=None):
        return np.multiply(dA, A * (1.0 - A), out=out)


class Tanh(Activation):
    """``A = tanh(Z)``."""

    name = "tanh"

    def forward(self, Z, out=None):
        return np.tanh(Z, out=out)

    # dA/dZ = 1 - A^2
    def backward(self, dA, Z, A, out=None):
        return np.multiply(dA, 1.0 - A * A, out=out)


class Softmax(Activation):
    """Row-wise ``A_ij = exp(Z_ij) / sum_k exp(Z_ik)``, shifted by the row max.

    Used as an output activation. Paired with cross-entropy the two are fused
    (see ``losses.CrossEntropy``) and this Jacobian product is never needed.
    """

    name = "softmax"

    def forward(self, Z, out=None):
        A = np.subtract(Z, np.maximum.reduce(Z, axis=1, keepdims=True), out=out)
        np.exp(A, out=A)
        A /= np.add.reduce(A, axis=1, keepdims=True)
        return A

    # dZ_i = A_i (dA_i - sum_k dA_k A_k)   (Jacobian-vector product, row-wise)
    def backward(self, dA, Z, A, out=None):
        inner = np.add.reduce(dA * A, axis=1, keepdims=True)
        return np.multiply(A, dA - inner, out=out)


ACTIVATIONS: dict[str, type[Activation]] = {
    "linear": Linear,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "softmax": Softmax,
}

#: Activations allowed on hidden layers (softmax only makes sense on the output).
HIDDEN_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "linear")
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "linear", "tanh", "relu")


def get_activation(name: str) -> Activation:
    """Return a new activation for ``name``; unknown names list the known ones."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}"
        ) from None
