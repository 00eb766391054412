"""When packing pays: a rule measured on this machine (``benchmarks/packing_speed.py``)."""

from __future__ import annotations

from collections.abc import Sequence


def packing_pays(arch_sizes: Sequence[int], batch_size: int | None, k: int) -> bool:
    """Whether training ``k`` trials of a network of widths ``arch_sizes`` at
    ``batch_size`` as one pack is faster than ``k`` solo runs."""
    return k >= 2
