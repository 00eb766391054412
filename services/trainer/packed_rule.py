"""When packing pays: a rule measured on this machine (``benchmarks/packing_speed.py``).

A pack saves NumPy call overhead: k trials cost one call where they cost k.
It pays where a step is mostly overhead, not arithmetic, and it costs where
the stacked arrays no longer stay in the cache. Both follow the work of a
step, ``batch_size * n_weights`` (``step_work``: a sixth of a step's
matrix-product FLOPs).

Measured (TABLE BELOW, filled by the benchmark run)
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

#: packs pay up to this much work per step (batch_size * weights)
PACK_WORK_LIMIT = 1_000_000
#: the largest pack the table measured
MAX_PACK = 16


def step_work(arch_sizes: Sequence[int], batch_size: int | None) -> int:
    """``batch_size * n_weights`` for a network of widths ``arch_sizes``
    (``[n_features, hidden..., n_outputs]``)."""
    weights = sum(a * b for a, b in pairwise(arch_sizes))
    return (batch_size or 0) * weights


def packing_pays(arch_sizes: Sequence[int], batch_size: int | None, k: int) -> bool:
    """Whether training ``k`` trials of a network of widths ``arch_sizes`` at
    ``batch_size`` as one pack (``fit_packed``) is faster than ``k`` solo ``fit`` runs.

    ``batch_size=None`` (the whole set per batch) is treated as too much work.
    """
    if k < 2 or not batch_size:
        return False
    return step_work(arch_sizes, batch_size) <= PACK_WORK_LIMIT


def pack_size(arch_sizes: Sequence[int], batch_size: int | None, k: int) -> int:
    """How many of ``k`` trials to train per pack: 1 (solo) where packing does not
    pay, else up to ``MAX_PACK``."""
    if not packing_pays(arch_sizes, batch_size, min(k, MAX_PACK)):
        return 1
    return min(k, MAX_PACK)
