"""Optimizers with PyTorch's update rules and default constants.

An optimizer updates a parameter vector in place from its gradient:
``optimizer.step(params, grads, lr)``. The network keeps all parameters in
one flat vector laid out as ``[W_0, ..., W_L, b_0, ..., b_L]``, so the first
``n_decay`` entries are the weights: decoupled weight decay (``adamw``)
touches only those, never the biases. L2 (``l2 * W`` added to the weight
gradient) is applied by the training loop before ``step`` and is therefore
the same as PyTorch's coupled ``weight_decay`` on the weights.

State (moment buffers, step count) lives in the optimizer and round-trips
through ``state_dict`` / ``load_state_dict`` for checkpoints.
"""

from __future__ import annotations

import math

import numpy as np


class Optimizer:
    name = "optimizer"
    _buffer_names: tuple[str, ...] = ()

    def __init__(self, n_decay: int = 0):
        self.n_decay = int(n_decay)
        self.t = 0  # number of steps taken
        self.state: dict[str, np.ndarray] = {}
        self._tmp: np.ndarray | None = None
        self._tmp2: np.ndarray | None = None

    def _init_state(self, params: np.ndarray) -> None:
        if self._tmp is not None:
            return  # every step after the first (or after load_state_dict)
        for key in self._buffer_names:
            if key not in self.state:
                self.state[key] = np.zeros_like(params)
        self._tmp = np.empty_like(params)
        self._tmp2 = np.empty_like(params)

    #: whether ``step`` accepts gradients already multiplied by the learning rate
    takes_prescaled = False

    def step(
        self, params: np.ndarray, grads: np.ndarray, lr: float, prescaled: bool = False
    ) -> None:
        """Update ``params`` in place; ``prescaled``: ``grads`` hold ``lr * g``
        (only where ``takes_prescaled``)."""
        raise NotImplementedError

    def state_dict(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Return ``(scalars, arrays)``: JSON-able scalars and the moment buffers."""
        return {"name": self.name, "t": self.t}, dict(self.state)

    def load_state_dict(self, scalars: dict, arrays: dict[str, np.ndarray]) -> None:
        if scalars.get("name") != self.name:
            raise ValueError(f"checkpoint holds {scalars.get('name')!r} state, not {self.name!r}")
        self.t = int(scalars["t"])
        self.state = {k: np.array(v, copy=True) for k, v in arrays.items()}
        self._tmp = None  # the next step checks the loaded buffers


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    As ``torch.optim.SGD``::

        b = g                              (first step)
        b = momentum * b + (1 - dampening) * g
        d = g + momentum * b   if nesterov else b
        p = p - lr * d
    """

    name = "sgd"

    def __init__(self, n_decay=0, momentum=0.0, dampening=0.0, nesterov=False, **_):
        super().__init__(n_decay)
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        self._buffer_names = ("momentum_buffer",) if momentum else ()
        # Without momentum the update is p -= lr * g: given lr * g (the loss
        # folds lr into its gradient's 1/batch factor) it is one subtraction.
        self.takes_prescaled = not momentum

    def step(self, params, grads, lr, prescaled=False):
        self.t += 1
        if prescaled:
            if not self.takes_prescaled:
                raise ValueError("SGD with momentum needs the plain gradient")
            params -= grads
            return
        self._init_state(params)
        d, tmp = grads, self._tmp
        if self.momentum:
            buf = self.state["momentum_buffer"]
            if self.t == 1:
                np.copyto(buf, grads)
            else:
                buf *= self.momentum
                if self.dampening:
                    np.multiply(grads, 1.0 - self.dampening, out=tmp)
                    buf += tmp
                else:
                    buf += grads
            if self.nesterov:
                d = np.multiply(buf, self.momentum, out=self._tmp2)
                d += grads
            else:
                d = buf
        np.multiply(d, lr, out=tmp)
        params -= tmp


class RMSprop(Optimizer):
    """RMSprop in PyTorch's form (``alpha=0.99``, ``eps=1e-8``, eps outside the root)::

    v = alpha * v + (1 - alpha) * g^2
    p = p - lr * g / (sqrt(v) + eps)          (momentum = 0)
    b = momentum * b + g / (sqrt(v) + eps);  p = p - lr * b   (momentum > 0)
    """

    name = "rmsprop"

    def __init__(self, n_decay=0, alpha=0.99, eps=1e-8, momentum=0.0, **_):
        super().__init__(n_decay)
        self.alpha, self.eps, self.momentum = alpha, eps, momentum
        self._buffer_names = ("square_avg", "momentum_buffer") if momentum else ("square_avg",)

    def step(self, params, grads, lr, prescaled=False):
        self._init_state(params)
        self.t += 1
        if prescaled:
            raise ValueError(f"{self.name} needs the plain gradient")
        v, tmp, tmp2 = self.state["square_avg"], self._tmp, self._tmp2
        v *= self.alpha
        np.multiply(grads, grads, out=tmp)
        tmp *= 1.0 - self.alpha
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self.eps  # sqrt(v) + eps
        np.divide(grads, tmp, out=tmp2)
        if self.momentum:
            buf = self.state["momentum_buffer"]
            buf *= self.momentum
            buf += tmp2
            tmp2 = buf
        np.multiply(tmp2, lr, out=tmp)
        params -= tmp


class Adam(Optimizer):
    """Adam with PyTorch's bias correction (``betas=(0.9, 0.999)``, ``eps=1e-8``)::

    m = m + (1 - beta1) * (g - m)
    v = beta2 * v + (1 - beta2) * g^2
    p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    name = "adam"
    _buffer_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, n_decay=0, betas=(0.9, 0.999), eps=1e-8, **_):
        super().__init__(n_decay)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = eps

    def _decay(self, params, lr):
        pass

    def step(self, params, grads, lr, prescaled=False):
        self._init_state(params)
        self.t += 1
        if prescaled:
            raise ValueError(f"{self.name} needs the plain gradient")
        self._decay(params, lr)
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        tmp, tmp2 = self._tmp, self._tmp2
        np.subtract(grads, m, out=tmp)
        tmp *= 1.0 - self.beta1
        m += tmp
        v *= self.beta2
        np.multiply(grads, grads, out=tmp)
        tmp *= 1.0 - self.beta2
        v += tmp
        step_size = lr / (1.0 - self.beta1**self.t)
        np.sqrt(v, out=tmp)
        tmp /= math.sqrt(1.0 - self.beta2**self.t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp2)
        tmp2 *= step_size
        params -= tmp2


class AdamW(Adam):
    """Adam with decoupled weight decay (``weight_decay=0.01`` as PyTorch).

    Before the Adam step the weights (not the biases) shrink:
    ``W = W * (1 - lr * weight_decay)``.
    """

    name = "adamw"

    def __init__(self, n_decay=0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, **_):
        super().__init__(n_decay, betas=betas, eps=eps)
        self.weight_decay = weight_decay

    def _decay(self, params, lr):
        if self.weight_decay:
            params[: self.n_decay] *= 1.0 - lr * self.weight_decay


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
}


def get_optimizer(name: str, n_decay: int = 0, **options) -> Optimizer:
    """Build the optimizer ``name``; unknown names list the known ones."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}"
        ) from None
    return cls(n_decay=n_decay, **options)


def clip_by_global_norm(grads: np.ndarray, max_norm: float) -> float:
    """Scale ``grads`` in place so that their global L2 norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: ``g *= min(1, max_norm / (norm + 1e-6))``.
    Returns the norm before clipping.
    """
    norm = math.sqrt(float(np.vdot(grads, grads)))
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        grads *= grads.dtype.type(coef)
    return norm
