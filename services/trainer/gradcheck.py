"""Gradient checking: backpropagation against central differences, in float64.

For every parameter ``p`` the numerical derivative is
``(L(p + eps) - L(p - eps)) / (2 eps)`` (error ``O(eps^2)``), and each
parameter array is compared with its analytic gradient by the relative error
``||g_analytic - g_numeric|| / (||g_analytic|| + ||g_numeric||)``, which stays
meaningful where single entries are tiny.
"""

from __future__ import annotations

import numpy as np

from .losses import Loss
from .network import Network


def gradient_check(
    network: Network,
    X: np.ndarray,
    Y: np.ndarray,
    *,
    loss: Loss | None = None,
    l2: float = 0.0,
    eps: float = 1e-6,
    tolerance: float = 1e-6,
) -> dict:
    """Compare ``network``'s backpropagated gradients with finite differences.

    The check runs on a float64 copy with dropout off; ``network`` itself is
    not touched.

    Parameters
    ----------
    network : Network
    X : array, shape (batch, n_features)
    Y : array
        Targets shaped like the outputs, or class labels / a flat target vector
        (encoded with ``network.encode_targets``).
    loss : Loss, optional
        Objective to check instead of ``network.loss``.
    l2 : float
        Adds ``l2 / 2 * sum ||W||^2`` to the objective (gradient ``l2 * W``).

    Returns
    -------
    dict
        ``errors`` (relative error per ``"layer_i.W"`` / ``"layer_i.b"``),
        ``max_relative_error`` and ``passed`` (all below ``tolerance``).
    """
    net = network.astype(np.float64)
    for layer in net.layers:
        layer.dropout = 0.0
    if loss is not None:
        net.loss = loss
    X = net.as_rows(X)[0]
    Y = net.targets_like_outputs(Y, len(X)).astype(np.float64)

    net.loss_and_grads(X, Y, l2)
    analytic = net.grads_flat.copy()

    def objective() -> float:
        value = net.loss.value(net.forward(X), Y)
        if l2:
            W = net.params_flat[: net.n_weights]
            value += 0.5 * l2 * float(np.vdot(W, W))
        return value

    p = net.params_flat
    numeric = np.empty_like(p)
    for i in range(p.size):
        keep = p[i]
        p[i] = keep + eps
        up = objective()
        p[i] = keep - eps
        down = objective()
        p[i] = keep
        numeric[i] = (up - down) / (2 * eps)

    analytic, numeric = net.canonical(analytic), net.canonical(numeric)  # [W_0.., b_0..]
    errors = {}
    offset = 0
    for key in ("W", "b"):
        for i, layer in enumerate(net.layers):
            size = layer.params[key].size
            a, n = analytic[offset : offset + size], numeric[offset : offset + size]
            denom = np.linalg.norm(a) + np.linalg.norm(n)
            errors[f"layer_{i}.{key}"] = float(np.linalg.norm(a - n) / denom) if denom else 0.0
            offset += size
    worst = max(errors.values())
    return {"errors": errors, "max_relative_error": worst, "passed": worst < tolerance}
