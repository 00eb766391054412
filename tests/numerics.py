"""How the suite compares floating-point results.

The rule: bit-for-bit equality is asserted only between identical
computations (the same shapes, in the same order, on the same BLAS kernel and
thread count: a resumed run against the uninterrupted one, the same spec
twice in one process). Anything else is compared with a tolerance derived
from the dtype's epsilon and the length of the reductions involved, never
with a number picked to pass. That covers one row against a batch (GEMV and
GEMM block their sums differently), another shape or batch size, another
dtype, another summation order (a loss summed per batch or per epoch), and
another CPU: numpy's OpenBLAS picks a kernel per CPU (``SkylakeX`` where
AVX-512 exists, ``Haswell`` or ``Zen`` on AVX2), and their last bits differ.

The bound is the classic one for a sum of ``n`` rounded terms (Higham,
*Accuracy and Stability of Numerical Algorithms*, 3.1):
``|fl(s) - s| <= gamma_n * sum|terms|`` with ``gamma_n = n u / (1 - n u)``
and ``u = eps / 2``. Two computations that each keep within it differ by at
most ``2 gamma_n`` relative to the sum of the magnitudes; a result that goes
through ``steps`` such rounds (training epochs, stacked layers) compounds
them, to first order, into ``gamma_(n * steps)``.
"""

from __future__ import annotations

import numpy as np


def gamma(n: int, dtype) -> float:
    """Higham's ``gamma_n``: the relative error bound of a sum of ``n`` terms in ``dtype``."""
    u = float(np.finfo(dtype).eps) / 2
    nu = n * u
    if nu >= 1:
        raise ValueError(f"a reduction of {n} terms has no useful bound in {np.dtype(dtype)}")
    return nu / (1 - nu)


def rounding_rtol(dtype, reduction: int, steps: int = 1) -> float:
    """Relative tolerance between two roundings of one value.

    ``reduction`` is the number of terms summed along the longest chain of
    products that produced the value (for a network: the sum over its layers
    of each fan-in plus its bias); ``steps`` the number of times such a
    chain was repeated and fed into the next (epochs of updates).
    """
    return 2 * gamma(reduction * steps, dtype)


def network_reduction(sizes: list[int]) -> int:
    """The longest chain of sums in a forward pass: each layer's fan-in plus its bias."""
    return sum(n_in + 1 for n_in in sizes[:-1])


def assert_close(actual, expected, dtype, reduction: int, steps: int = 1) -> None:
    """``actual`` equals ``expected`` to ``rounding_rtol``, relative to the largest
    magnitude among them (a value near zero inherits the rounding of its neighbours)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    tol = rounding_rtol(dtype, reduction, steps)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), float(np.finfo(dtype).tiny))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)
