"""The update step of a pack: ``optimizers`` over stacked parameters, trial by trial scalars.

A pack's rows are grouped into *segments* of trials that take the same code
path in ``fit`` (``path_of``: the optimizer, whether SGD/RMSprop use
momentum, Nesterov, whether L2 and gradient clipping are on). Each segment
is a contiguous slice of the stacked ``(k, n_params)`` arrays, so its step
is the solo optimizer's step on ``(m, n_params)`` views, with each trial's
scalars (learning rate, momentum, betas, eps, ...) as an ``(m, 1)`` array of
the network's dtype: exactly the float32 (or float64) value NumPy makes of
the Python float in the solo step, so every element is computed as in the
solo run. A pack of one learning-rate sweep is one segment.

Where a scalar that is 0 in one trial and not in another only changes a
multiplication by 1 (dampening, AdamW's decay, a prescaled gradient), the
segment multiplies by exactly 1.0 instead of branching: ``x * 1 == x`` bit
for bit.
"""

from __future__ import annotations

import math

import numpy as np

from .packed_pass import _dots

ALL_PRESCALED, MIXED, PLAIN = 0, 1, 2  # how an SGD segment's gradients arrive (see fit's folding)


def path_of(hp) -> tuple:
    """What decides a trial's code path in ``fit``'s step (trials with equal paths
    share a segment)."""
    if hp.optimizer == "sgd":
        opt: tuple = ("sgd", hp.momentum > 0, bool(hp.nesterov and hp.momentum > 0))
    elif hp.optimizer == "rmsprop":
        opt = ("rmsprop", hp.momentum > 0)
    else:
        opt = (hp.optimizer,)
    return opt + (hp.l2 > 0, hp.gradient_clip_norm is not None)


def _column(values, dtype) -> np.ndarray:
    """Per-trial scalars as an (m, 1) array of ``dtype`` (each Python float rounded
    as NumPy rounds it in the solo step)."""
    return np.array([dtype.type(v) for v in values], dtype).reshape(-1, 1)


class PackedOptimizer:
    """One segment's optimizer: state buffers (m, n_params), one step count."""

    name = ""
    buffer_names: tuple[str, ...] = ()

    def __init__(self, hps: list, dtype, n_params: int, states: list[dict], t: int):
        m = len(hps)
        self.dtype, self.t = np.dtype(dtype), t
        self.state = {key: np.zeros((m, n_params), dtype) for key in self.buffer_names}
        for j, state in enumerate(states):
            for key, value in state.items():
                if key in self.state:
                    self.state[key][j] = value
        self._tmp = np.empty((m, n_params), dtype)
        self._tmp2 = np.empty((m, n_params), dtype)

    def rows(self, j: int) -> dict[str, np.ndarray]:
        """Trial ``j``'s state buffers (views), as the solo optimizer keeps them."""
        return {key: value[j] for key, value in self.state.items()}

    def start_epoch(self, lr: np.ndarray) -> None:
        """The epoch's rates (m,) float64: what stays fixed over the epoch."""
        self.lr64 = lr
        self.lr = _column(lr, self.dtype)

    def step(self, params, grads, mode: int = PLAIN, eff=None) -> None:
        raise NotImplementedError


class PackedSGD(PackedOptimizer):
    """``optimizers.SGD`` (see there): one segment is all momentum, or all not;
    all Nesterov or all not."""

    name = "sgd"

    def __init__(self, hps, dtype, n_params, states, t):
        self.has_momentum = hps[0].momentum > 0
        self.nesterov = bool(hps[0].nesterov) and self.has_momentum
        self.buffer_names = ("momentum_buffer",) if self.has_momentum else ()
        super().__init__(hps, dtype, n_params, states, t)
        self.momentum = _column([hp.momentum for hp in hps], self.dtype)
        damp = [hp.dampening for hp in hps]
        self.one_minus_damp = _column([1.0 - d for d in damp], self.dtype) if any(damp) else None

    def step(self, params, grads, mode=PLAIN, eff=None):
        self.t += 1
        if mode == ALL_PRESCALED:  # grads hold lr * g
            params -= grads
            return
        tmp = self._tmp
        if mode == MIXED:  # eff: 1 where grads hold lr * g, else lr
            np.multiply(grads, eff, out=tmp)
            params -= tmp
            return
        d = grads
        if self.has_momentum:
            buf = self.state["momentum_buffer"]
            if self.t == 1:
                np.copyto(buf, grads)
            else:
                buf *= self.momentum
                if self.one_minus_damp is not None:
                    np.multiply(grads, self.one_minus_damp, out=tmp)
                    buf += tmp
                else:
                    buf += grads
            if self.nesterov:
                d = np.multiply(buf, self.momentum, out=self._tmp2)
                d += grads
            else:
                d = buf
        np.multiply(d, self.lr, out=tmp)
        params -= tmp


class PackedRMSprop(PackedOptimizer):
    """``optimizers.RMSprop``: one segment is all momentum, or all not."""

    name = "rmsprop"

    def __init__(self, hps, dtype, n_params, states, t):
        self.has_momentum = hps[0].momentum > 0
        self.buffer_names = (
            ("square_avg", "momentum_buffer") if self.has_momentum else ("square_avg",)
        )
        super().__init__(hps, dtype, n_params, states, t)
        self.alpha = _column([hp.alpha for hp in hps], self.dtype)
        self.one_minus_alpha = _column([1.0 - hp.alpha for hp in hps], self.dtype)
        self.eps = _column([hp.eps for hp in hps], self.dtype)
        self.momentum = _column([hp.momentum for hp in hps], self.dtype)

    def step(self, params, grads, mode=PLAIN, eff=None):
        self.t += 1
        v, tmp, tmp2 = self.state["square_avg"], self._tmp, self._tmp2
        v *= self.alpha
        np.multiply(grads, grads, out=tmp)
        tmp *= self.one_minus_alpha
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self.eps
        np.divide(grads, tmp, out=tmp2)
        if self.has_momentum:
            buf = self.state["momentum_buffer"]
            buf *= self.momentum
            buf += tmp2
            tmp2 = buf
        np.multiply(tmp2, self.lr, out=tmp)
        params -= tmp


class PackedAdam(PackedOptimizer):
    """``optimizers.Adam`` (and ``AdamW``'s decoupled decay, 1.0 where it is off).

    The bias corrections are Python floats per trial, as in the solo step (NumPy's
    vectorized ``power`` may round otherwise); when the trials share their betas
    they are computed once per step.
    """

    name = "adam"
    buffer_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, hps, dtype, n_params, states, t, n_decay: int = 0):
        super().__init__(hps, dtype, n_params, states, t)
        self.beta1 = [float(hp.betas[0]) for hp in hps]
        self.beta2 = [float(hp.betas[1]) for hp in hps]
        self.shared_betas = len(set(self.beta1)) == 1 and len(set(self.beta2)) == 1
        self.one_minus_b1 = _column([1.0 - b for b in self.beta1], self.dtype)
        self.one_minus_b2 = _column([1.0 - b for b in self.beta2], self.dtype)
        self.eps = _column([hp.eps for hp in hps], self.dtype)
        self.weight_decay = np.array([hp.weight_decay for hp in hps], np.float64)
        self.n_decay = n_decay
        self.decay: np.ndarray | None = None

    def start_epoch(self, lr):
        super().start_epoch(lr)
        self.decay = None
        if self.name == "adamw" and self.weight_decay.any():
            self.decay = (1.0 - lr * self.weight_decay).astype(self.dtype).reshape(-1, 1)

    def step(self, params, grads, mode=PLAIN, eff=None):
        self.t += 1
        t, dtype = self.t, self.dtype
        if self.decay is not None:
            params[:, : self.n_decay] *= self.decay
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        tmp, tmp2 = self._tmp, self._tmp2
        np.subtract(grads, m, out=tmp)
        tmp *= self.one_minus_b1
        m += tmp
        v *= self.beta2_column
        np.multiply(grads, grads, out=tmp)
        tmp *= self.one_minus_b2
        v += tmp
        if self.shared_betas:
            step_size = (self.lr64 / (1.0 - self.beta1[0] ** t)).astype(dtype).reshape(-1, 1)
            root: float | np.ndarray = math.sqrt(1.0 - self.beta2[0] ** t)
        else:
            step_size = _column(
                [lr / (1.0 - b1**t) for lr, b1 in zip(self.lr64, self.beta1, strict=True)], dtype
            )
            root = _column([math.sqrt(1.0 - b2**t) for b2 in self.beta2], dtype)
        np.sqrt(v, out=tmp)
        tmp /= root
        tmp += self.eps
        np.divide(m, tmp, out=tmp2)
        tmp2 *= step_size
        params -= tmp2

    @property
    def beta2_column(self) -> np.ndarray:
        col = getattr(self, "_beta2_column", None)
        if col is None:
            col = self._beta2_column = _column(self.beta2, self.dtype)
        return col


class PackedAdamW(PackedAdam):
    name = "adamw"


PACKED_OPTIMIZERS: dict[str, type[PackedOptimizer]] = {
    "sgd": PackedSGD,
    "rmsprop": PackedRMSprop,
    "adam": PackedAdam,
    "adamw": PackedAdamW,
}


class Segment:
    """Rows ``[a, b)`` of a pack that take one code path: their L2, clipping and
    optimizer step (``fit``'s order: L2 into the gradient, then clipping, then the step).
    """

    def __init__(self, a: int, b: int, hps: list, P, G, n_weights: int, states, t: int):
        self.a, self.b = a, b
        hp = hps[0]
        dtype = P.dtype
        self.params, self.grads = P[a:b], G[a:b]
        self.W, self.gW = P[a:b, :n_weights], G[a:b, :n_weights]
        self.l2 = _column([h.l2 for h in hps], dtype) if hp.l2 > 0 else None
        self.l2_tmp = np.empty_like(self.W) if self.l2 is not None else None
        self.clip = (
            np.array([h.gradient_clip_norm for h in hps], np.float64)
            if hp.gradient_clip_norm is not None
            else None
        )
        cls = PACKED_OPTIMIZERS[hp.optimizer]
        n = P.shape[1]
        if cls in (PackedAdam, PackedAdamW):
            self.optimizer: PackedOptimizer = cls(hps, dtype, n, states, t, n_decay=n_weights)  # type: ignore[call-arg]
        else:
            self.optimizer = cls(hps, dtype, n, states, t)
        #: plain SGD without L2 or clipping: the loss may fold the rate into the gradient
        self.folds = (
            hp.optimizer == "sgd" and hp.momentum == 0 and self.l2 is None and self.clip is None
        )
        self.mode = PLAIN
        self.eff: np.ndarray | None = None

    def start_epoch(self, lr: np.ndarray) -> np.ndarray:
        """Take the epoch's rates (m,) float64; return which trials fold their rate
        into the loss's gradient (the batches other than the norm step's)."""
        self.optimizer.start_epoch(lr)
        folded = (lr > 0) if self.folds else np.zeros(len(lr), bool)
        self.mode = ALL_PRESCALED if folded.all() else MIXED if folded.any() else PLAIN
        self.eff = None
        if self.mode == MIXED:
            self.eff = _column(np.where(folded, 1.0, lr), self.params.dtype)
        return folded

    def add_l2(self) -> None:
        if self.l2 is not None:  # l2 * W, the L2 term's gradient, on the weights only
            self.gW += np.multiply(self.W, self.l2, out=self.l2_tmp)

    def clip_gradients(self) -> None:
        """``optimizers.clip_by_global_norm`` per trial: scale by min(1, c / (norm + 1e-6))."""
        if self.clip is None:
            return
        G = self.grads
        norm = np.sqrt(_dots(G[:, None, :], G[:, :, None]).astype(np.float64))
        coef = self.clip / (norm + 1e-6)
        G *= np.where(coef < 1.0, coef, 1.0).astype(G.dtype)[:, None]

    def step(self, plain: bool) -> None:
        """The update; ``plain``: at a step whose gradient norms are taken (never folded)."""
        mode = PLAIN if plain else self.mode
        self.optimizer.step(self.params, self.grads, mode, self.eff)
