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
``fit_packed``; CPU seconds, median of 7 alternating rounds; throughput
ratio packed over solo, above 1 the pack is faster). Three runs at load
averages 2.9-6.0 (other work ran); the last, and in brackets the range over
the three::

    network  sizes        batch   step_work  k=2          k=4          k=8          k=16
    tiny     2-64-2          32       8,192  1.20 (18-22) 1.75 (71-75) 2.33 (19-33) 2.71 (41-71)
    small    2-64-64-2       32     139,264  1.16 (11-16) 1.44 (38-44) 1.74 (62-74) 1.75 (66-75)
    medium   64-128-10       64     606,208  1.03 (95-03) 1.10 (07-10) 1.16 (14-18) 1.07 (07-10)
    mid      64-256-256-10   64   5,406,720  0.92 (92-93) 0.90 (90-92) 0.85 (85-90) 0.88 (88-89)
    large    784-256-10     128  26,017,792  0.89 (89-97) 0.88 (88-02) 0.90 (88-90) 0.88 (79-88)

(the brackets give the hundredths: ``(95-03)`` is 0.95 to 1.03).
Where the rule packs, every measured ratio is above 1 (medium at k = 2 was
0.95 in one run: the rule leaves it solo).

Why the small network stays under 3x: its 64x64 layer makes a step
GEMM-bound, not call-bound. Per trial and step the three 32x64x64 products
cost ~7 us in BLAS (near the single core's peak) of the ~30 us a solo step
takes, and the pack must make the same BLAS call per slice to give the same
bits (``packed``'s docstring). A pack of 8 measured 2.2x per training step
against 8 packs of one (``d @ W.T`` alone, BLAS's slower transposed-B path,
is about a quarter of the packed step; a kept contiguous copy of ``W.T``
would halve it, but BLAS's other kernel then changes the last bits, tried:
so the pack keeps the solo run's call); the per-epoch evaluation of each
trial (the validation set and the 1,024-row training sample, the same work
packed or not) brings the whole run to ~1.75x. The tiny 2-64-2 network of
the issue's first measurement, call-bound, reaches 3.8x per step and 2.2-2.3x
per run at k = 8 (2.4-2.7x at 16).

Leaving the pack (``fit_packed(leave=...)``): with 4 of 8 small-network
trials stopped by their callback after epoch 2 of 8, dropping them from the
stack took 0.112 s and masking them (their rows computing on) 0.156 s
(median of 7: 1.39x; 1.35x in another run, 1.20x with the tiny network):
drop is the default.
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
