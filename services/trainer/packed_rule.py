"""When packing pays: a rule measured on this machine (``benchmarks/packing_speed.py``).

A pack saves NumPy call overhead: k trials make one call where they made k.
It pays where a step is mostly overhead, not arithmetic; where the matrix
products dominate it saves nothing and the bigger stacked arrays cost cache.
Both follow the work of a step, ``step_work = batch_size * n_weights`` (a
sixth of a step's matrix-product FLOPs). The rule:

=========================  =====================
step_work                  pack when
=========================  =====================
<= 250,000                 k >= 2
<= 1,000,000               k >= 4
more                       never
=========================  =====================

Measured (float32, one BLAS thread, OpenBLAS SkylakeX, 2 shared vCPUs; k
trials of a learning-rate sweep, solo ``fit`` one after the other vs one
``fit_packed``; CPU seconds, median of 7 alternating rounds; two runs at load
averages 3.9-6.0 while other work ran, the first with 3 epochs, the second
with 5 for the three smaller networks)::

    network  sizes          batch  step_work  k=2        k=4        k=8        k=16
    tiny     2-64-2            32      8,192  1.22 1.18  1.71 1.74  2.19 2.24  2.41 2.61
    small    2-64-64-2         32    139,264  1.11 1.15  1.42 1.38  1.62 1.65  1.72 1.66
    medium   64-128-10         64    606,208  1.02 0.95  1.07 1.07  1.18 1.14  1.10 1.07
    mid      64-256-256-10     64  5,406,720  0.93 0.92  0.91 0.92  0.90 0.89  0.88 0.89
    large    784-256-10       128 26,017,792  0.97 0.91  1.02 0.92  0.90 0.88  0.83 0.79

(throughput ratios, packed over solo: above 1 the pack is faster). Where
the rule packs, every measured ratio is above 1 (medium at k = 2 was 0.95
in one run: the rule leaves it solo).

Why the small network stays under 3x: its 64x64 layer makes a step
GEMM-bound, not call-bound. Per trial and step the three 32x64x64 products
cost ~6 us in BLAS (about the single core's peak) of the ~30 us a solo step
takes, and the pack must make the same BLAS call per slice to give the same
bits (``packed``'s docstring). A pack of 8 measured 2.2x per training step
against 8 packs of one (``d @ W.T`` alone, BLAS's slower transposed-B path,
is about a quarter of the packed step); the per-epoch evaluation of each
trial (the validation set and the 1,024-row training sample, the same work
packed or not) brings the whole run to ~1.65x. The tiny 2-64-2 network of
the issue's first measurement, call-bound, reaches 3.8x per step and 2.2-2.6x
per run.

Leaving the pack (``fit_packed(leave=...)``): with 4 of 8 small-network
trials stopped by their callback after epoch 2 of 8, dropping them from the
stack took 0.120 s and masking them (their rows computing on) 0.161 s
(median of 7; 1.35x; 1.20x in another run on the tiny network): drop is the
default.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

#: up to this much work per step a pack of 2 pays, up to ``FOUR_PAYS`` a pack of 4
ANY_PAYS = 250_000
FOUR_PAYS = 1_000_000
#: the largest pack the table measured
MAX_PACK = 16


def step_work(arch_sizes: Sequence[int], batch_size: int | None) -> int:
    """``batch_size * n_weights`` for a network of widths ``arch_sizes``
    (``[n_features, hidden..., n_outputs]``)."""
    weights = sum(a * b for a, b in pairwise(arch_sizes))
    return (batch_size or 0) * weights


def packing_pays(arch_sizes: Sequence[int], batch_size: int | None, k: int) -> bool:
    """Whether training ``k`` trials of a network of widths ``arch_sizes`` at
    ``batch_size`` as one pack (``fit_packed``) is faster than ``k`` solo ``fit``
    runs, by the rule above. ``batch_size=None`` (the whole set per batch) does not
    pack.
    """
    if k < 2 or not batch_size:
        return False
    work = step_work(arch_sizes, batch_size)
    return work <= ANY_PAYS or (k >= 4 and work <= FOUR_PAYS)


def pack_size(arch_sizes: Sequence[int], batch_size: int | None, k: int) -> int:
    """How many of ``k`` trials to train per pack: 1 (solo) where packing does not
    pay, else ``min(k, MAX_PACK)`` (the ratio grows with k up to there)."""
    size = min(k, MAX_PACK)
    return size if packing_pays(arch_sizes, batch_size, size) else 1
