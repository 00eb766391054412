"""The learning-rate range test (L. Smith, 2015; as popularized by fastai).

One short run over mini-batches in which the learning rate grows
exponentially from ``lr_min`` to ``lr_max``; the loss of each batch (before its
update) traces how the network responds to the rate. The sweep stops when
the smoothed loss exceeds ``diverge_factor`` times its minimum (or is not
finite): that rate is where training diverges. The suggestion is a tenth of
the rate at the minimum of the smoothed loss; the interval runs from the rate
where the smoothed loss fell fastest (per unit of log rate) to a third of the
rate at the minimum.
"""

from __future__ import annotations

import math

import numpy as np

from .build import build_network, generators, load_dataset
from .data import Dataset
from .network import Network
from .optimizers import clip_by_global_norm, get_optimizer
from .spec import parse_spec


def lr_range_test(
    spec,
    *,
    data: Dataset | None = None,
    network: Network | None = None,
    lr_min: float = 1e-7,
    lr_max: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
) -> dict:
    """Sweep the learning rate exponentially over ``steps`` mini-batches.

    The spec's optimizer, batch size, dtype and seed are used; its learning
    rate and schedule are ignored. ``network`` (if given) is copied, not trained.

    Returns
    -------
    dict
        ``learning_rates``, ``losses``, ``smoothed_losses`` (one per step taken),
        ``diverged_lr`` (None if the sweep never diverged), ``min_loss_lr``,
        ``steepest_lr``, ``suggested_lr`` and ``interval`` ``[low, high]``.
    """
    if not (0 < lr_min < lr_max) or steps < 2:
        raise ValueError("need 0 < lr_min < lr_max and steps >= 2")
    spec = parse_spec(spec)
    hp = spec.hyperparameters
    data = data if data is not None else load_dataset(spec.dataset)
    init_rng, rng = generators(hp.seed)
    net = network.copy() if network is not None else build_network(spec, data, init_rng)
    X = np.ascontiguousarray(data.X_train, net.dtype)
    Y = net.encode_targets(data.y_train)
    n = len(X)
    bs = min(hp.batch_size or n, n)
    optimizer = get_optimizer(hp.optimizer, net.n_weights, **hp.optimizer_options())

    lrs, losses, smoothed = [], [], []
    avg, best, diverged_lr = 0.0, math.inf, None
    perm, pos = rng.permutation(n), 0
    with np.errstate(all="ignore"):
        for i in range(steps):
            lr = lr_min * (lr_max / lr_min) ** (i / (steps - 1))
            if pos + bs > n:
                perm, pos = rng.permutation(n), 0
            idx = perm[pos : pos + bs]
            pos += bs
            O = net.forward(X[idx], True, rng)
            dO = np.empty_like(O)
            loss = float(net.loss.forward_backward(O, Y[idx], dO))
            if not math.isfinite(loss):
                diverged_lr = lr
                break
            net.backward(dO)
            if hp.l2:
                net.grads_flat[: net.n_weights] += hp.l2 * net.params_flat[: net.n_weights]
            if hp.gradient_clip_norm is not None:  # the same update as fit's
                clip_by_global_norm(net.grads_flat, hp.gradient_clip_norm)
            optimizer.step(net.params_flat, net.grads_flat, lr)
            avg = smoothing * avg + (1 - smoothing) * loss
            s = avg / (1 - smoothing ** (i + 1))
            lrs.append(lr)
            losses.append(loss)
            smoothed.append(s)
            best = min(best, s)
            if i >= 5 and s > diverge_factor * best:
                diverged_lr = lr
                break

    sm = np.array(smoothed)
    k_min = int(np.argmin(sm))
    min_lr = lrs[k_min]
    skip = min(10, k_min // 2)  # the first smoothed values are mostly noise
    if k_min - skip >= 2:
        slope = np.gradient(sm[skip : k_min + 1], np.log(lrs[skip : k_min + 1]))
        steepest = lrs[skip + int(np.argmin(slope))]
    else:
        steepest = lrs[k_min]
    suggested = min_lr / 10.0
    interval = [min(steepest, suggested), max(min_lr / 3.0, suggested)]
    return {
        "learning_rates": lrs,
        "losses": losses,
        "smoothed_losses": smoothed,
        "diverged_lr": diverged_lr,
        "min_loss_lr": min_lr,
        "steepest_lr": steepest,
        "suggested_lr": suggested,
        "interval": interval,
    }
