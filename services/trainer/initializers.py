"""Weight initializers. Biases always start at zero.

Each initializer draws ``W`` of shape ``(fan_in, fan_out)`` from an explicit
``np.random.Generator``; there is no global random state.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Initializer = Callable[[np.random.Generator, int, int, float], np.ndarray]


def he(rng: np.random.Generator, fan_in: int, fan_out: int, std: float = 0.0) -> np.ndarray:
    """He (Kaiming) normal: ``W ~ N(0, 2 / fan_in)``, suited to ReLU layers."""
    return rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)


def xavier(rng: np.random.Generator, fan_in: int, fan_out: int, std: float = 0.0) -> np.ndarray:
    """Glorot uniform: ``W ~ U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def normal(rng: np.random.Generator, fan_in: int, fan_out: int, std: float = 0.01) -> np.ndarray:
    """Plain normal: ``W ~ N(0, std^2)`` (``architecture.init_std``, default 0.01)."""
    return rng.standard_normal((fan_in, fan_out)) * std


INITIALIZERS: dict[str, Initializer] = {"he": he, "xavier": xavier, "normal": normal}


def get_initializer(name: str) -> Initializer:
    """Return the initializer called ``name``; unknown names list the known ones."""
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown initializer {name!r}; known: {', '.join(sorted(INITIALIZERS))}"
        ) from None
