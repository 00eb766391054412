"""The dense (fully connected) layer: its parameters and its inference forward pass.

``A = g(X @ W + b)`` with ``W`` of shape ``(n_in, n_out)`` and ``b`` of shape
``(n_out,)``. ``params`` and ``grads`` are dicts keyed ``"W"`` and ``"b"``.
When a layer is part of a ``Network`` they are views into the network's flat
parameter and gradient vectors, so an optimizer updates every layer in a few
calls; write into them (``params["W"][...] = W_new``) rather than rebinding
them.

Training (dropout, the cached intermediates, backpropagation) is the
network's ``backprop.TrainingPass``, which runs every layer's forward and
backward from preallocated buffers; its docstring has the equations.
"""

from __future__ import annotations

import numpy as np

from .activations import Activation, get_activation


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
        Read when the network builds its training pass.
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
        self.dropout = float(dropout)
        self.dtype = np.dtype(dtype)
        self.params = {
            "W": np.zeros((self.n_in, self.n_out), self.dtype),
            "b": np.zeros(self.n_out, self.dtype),
        }
        self.grads = {"W": np.zeros_like(self.params["W"]), "b": np.zeros_like(self.params["b"])}

    def __repr__(self) -> str:
        return (
            f"Dense({self.n_in}, {self.n_out}, activation={self.activation.name!r}, "
            f"dropout={self.dropout})"
        )

    def forward(self, X: np.ndarray) -> np.ndarray:
        """``A = g(X @ W + b)`` for ``X`` of shape ``(batch, n_in)``, in a new array."""
        Z = X @ self.params["W"]
        Z += self.params["b"]
        return self.activation.forward(Z, out=Z)
