"""The learning-rate range test (L. Smith, 2015; as popularized by fastai).

One short run over mini-batches in which the learning rate grows
exponentially from ``lr_min`` to ``lr_max``; the loss of each batch (before its
update) traces how the network responds to the rate. The loss is smoothed by a
bias-corrected exponential moving average (``smoothing`` is its beta). The run
stops when the smoothed loss exceeds ``diverge_factor`` times its minimum (or a
loss is not finite).

What the curve says (:func:`read_curve`, a pure function of the curve):

- ``suggested_lr``: the rate where the smoothed loss falls fastest per unit of
  log rate (the steepest descent), between its first noisy values and its
  minimum;
- ``divergence_lr``: the rate where the loss starts to diverge: the first
  step after the smoothed minimum whose loss is above ``diverge_factor`` times
  that minimum (or not finite); None when no loss went that high;
- ``interval``: a range of good rates, from the lower of the steepest rate and
  a tenth of the minimum's rate to the higher of the steepest and a third of it,
  cut to the rates the test tried.

A run whose smoothed loss was lowest at its first step and then diverged found
no rate where the network learns: it raises ``ValueError`` (lower ``lr_min``)
rather than suggest the first rate it tried.
"""

from __future__ import annotations

import math

import numpy as np

from .build import build_network, generators, load_dataset
from .data import Dataset
from .network import Network
from .optimizers import clip_by_global_norm, get_optimizer
from .spec import parse_spec
from .subnormals import flushing

#: The half-width of the window the steepest descent is measured over, as a share of the steps.
SLOPE_SPAN = 0.05


@flushing
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

    Step ``i`` (0-based) trains one batch at ``lr_min * (lr_max / lr_min) ** (i / (steps - 1))``.
    The spec's optimizer, batch size, dtype and seed are used; its learning
    rate and schedule are ignored. ``network`` (if given) is copied, not trained.

    Returns
    -------
    dict
        ``learning_rates``, ``losses``, ``smoothed_losses`` (one per step taken),
        ``diverged_lr`` (the rate the run stopped at; None if it reached ``lr_max``),
        and what :func:`read_curve` reads from them: ``divergence_lr``,
        ``min_loss_lr``, ``steepest_lr``, ``suggested_lr`` and ``interval`` ``[low, high]``.
    """
    if not (0 < lr_min < lr_max) or steps < 2:
        raise ValueError("need 0 < lr_min < lr_max and steps >= 2")
    if not (0 <= smoothing < 1) or diverge_factor <= 1:
        raise ValueError("need 0 <= smoothing < 1 and diverge_factor > 1")
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
    avg, best, diverged_lr, nonfinite_lr = 0.0, math.inf, None, None
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
                diverged_lr = nonfinite_lr = lr
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
    if not losses:
        raise ValueError(
            f"the loss is not finite at the first step (learning rate {lr_min:g}): "
            "lower the lowest rate, or check the data and the network"
        )
    if diverged_lr is not None and int(np.argmin(smoothed)) == 0:
        raise ValueError(
            f"the loss rose from the first step and diverged by learning rate "
            f"{diverged_lr:.4g}: every rate tried (from {lr_min:g}) is too high, so there "
            "is nothing to suggest; lower the lowest rate"
        )
    return {
        "learning_rates": lrs,
        "losses": losses,
        "smoothed_losses": smoothed,
        "diverged_lr": diverged_lr,
        **read_curve(
            lrs, losses, smoothed, diverge_factor=diverge_factor, nonfinite_lr=nonfinite_lr
        ),
    }


def smooth(losses: list[float], beta: float) -> list[float]:
    """The bias-corrected exponential moving average of ``losses`` (what the test records).

    ``a_i = beta * a_(i-1) + (1 - beta) * x_i`` from ``a_(-1) = 0``, and
    ``s_i = a_i / (1 - beta ** (i + 1))`` (the correction makes ``s_0 = x_0``).
    """
    out, avg = [], 0.0
    for i, x in enumerate(losses):
        avg = beta * avg + (1 - beta) * x
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def read_curve(
    lrs: list[float],
    losses: list[float],
    smoothed: list[float],
    *,
    diverge_factor: float = 4.0,
    nonfinite_lr: float | None = None,
) -> dict:
    """What a range test's curve says (see the module's docstring).

    ``lrs``, ``losses`` and ``smoothed`` hold one value per step (rates rising);
    ``nonfinite_lr`` is the rate of a step after them whose loss was not finite.
    The steepest descent is ``argmin`` over ``k`` of the central difference
    ``(s[k+h] - s[k-h]) / (log lr[k+h] - log lr[k-h])``, its window inside the steps
    from ``min(10, k_min // 2)`` (the first smoothed values are mostly noise) to the
    minimum ``k_min``; ``h`` is ``SLOPE_SPAN`` of the steps (at least 1, at most half
    the range): a slope from one step to the next picks the smoothed curve's wobbles
    (+-0.01 over a step is a slope of 0.05 per unit of log rate at 100 steps over
    8 decades) before its real descent.
    """
    sm = np.asarray(smoothed, dtype=np.float64)  # (steps,)
    k_min = int(np.argmin(sm))
    min_lr, best = lrs[k_min], float(sm[k_min])
    x = np.log(np.asarray(lrs, dtype=np.float64))  # (steps,)
    skip = min(10, k_min // 2)
    if k_min - skip >= 2:
        h = max(1, min(round(SLOPE_SPAN * len(sm)), (k_min - skip) // 2))
        ks = np.arange(skip + h, k_min - h + 1)  # centres whose window fits in [skip, k_min]
        slope = (sm[ks + h] - sm[ks - h]) / (x[ks + h] - x[ks - h])
        steepest = lrs[int(ks[np.argmin(slope)])]
    else:
        steepest = lrs[k_min]
    after = zip(lrs[k_min + 1 :], losses[k_min + 1 :], strict=True)
    divergence = next((lr for lr, x in after if x > diverge_factor * best), nonfinite_lr)
    return {
        "divergence_lr": divergence,
        "min_loss_lr": min_lr,
        "steepest_lr": steepest,
        "suggested_lr": steepest,
        # never outside the rates the test tried
        "interval": [
            max(lrs[0], min(steepest, min_lr / 10.0)),
            min(lrs[-1], max(steepest, min_lr / 3.0)),
        ],
    }
