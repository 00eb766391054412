"""Training runs with subnormal floats flushed to zero (the CPU's FTZ and DAZ modes).

A float32 below ~1.2e-38 (float64: ~2.2e-308) is *subnormal*, and most x86
cores take a slow microcode path for every operation that reads or makes one.
Training meets them as soon as a network is confident: products of tiny
softmax gradients with small activations, a momentum buffer decaying where a
ReLU died. On a learning-rate sweep of 2-64-64-2 on moons (float32, momentum
0.9, 50 epochs) the trial at rate 0.2 took 0.89 s against 0.51 s at 0.001,
for the same arithmetic; flushed, both took 0.45-0.46 s, and the whole sweep
1.43x less CPU (float64: 1.23x), with records and weights unchanged
(``benchmarks/subnormal_speed.py``).

So ``fit``, ``fit_packed`` and the learning-rate range test train inside
:func:`flushed`: the calling thread's floating-point environment gets FTZ (a
result that would be subnormal is 0) and DAZ (a subnormal input reads as 0),
and gets its own back on the way out, whatever happens. JAX does the same on
CPU, and ``torch.set_flush_denormal(True)`` does it for PyTorch. Flushing
changes a value only where it is subnormal, far below the numbers it meets
in a network's sums; in every run measured (float32 and float64, rates up to
3, one diverging) no record and no weight changed.

NumPy has no switch for the mode, so it is set through the C library's
``fegetenv`` / ``fesetenv`` (``ctypes``), on the layouts of ``fenv_t`` known
here: glibc on x86-64 (MXCSR at byte 28: FTZ bit 15, DAZ bit 6) and on
AArch64 (FPCR first: FZ bit 24, which flushes inputs and results). Elsewhere
(macOS, Windows, musl) :func:`flushed` changes nothing, and :data:`SUPPORTED`
is False. The mode is per thread: with more than one BLAS thread per process
(``SWEEPLAB_BLAS_THREADS``, default 1) the other threads' share of a product
is computed unflushed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import platform
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np

F = TypeVar("F", bound=Callable)

_ENV_BYTES = 64  # larger than any fenv_t handled here (x86-64: 32, AArch64: 8)

#: (byte offset of the control word in fenv_t, the bits that flush), per machine
_LAYOUTS = {
    "x86_64": (28, (1 << 15) | (1 << 6)),  # MXCSR: FTZ | DAZ
    "aarch64": (0, 1 << 24),  # FPCR: FZ
}


def _libm() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("m")
    try:
        return ctypes.CDLL(name or "libm.so.6")
    except OSError:
        return None


_LIBM = _libm()
_LAYOUT = _LAYOUTS.get(platform.machine().lower()) if _LIBM is not None else None


def _get_env() -> ctypes.Array:
    env = ctypes.create_string_buffer(_ENV_BYTES)
    if _LIBM is None or _LIBM.fegetenv(env) != 0:
        raise OSError("fegetenv failed")
    return env


def _set_env(env: ctypes.Array) -> None:
    if _LIBM is None or _LIBM.fesetenv(env) != 0:
        raise OSError("fesetenv failed")


def _flushing_env(env: ctypes.Array) -> ctypes.Array:
    """A copy of ``env`` with the flush bits set."""
    assert _LAYOUT is not None
    offset, bits = _LAYOUT
    out = ctypes.create_string_buffer(env.raw, _ENV_BYTES)
    word = int.from_bytes(out.raw[offset : offset + 4], "little") | bits
    ctypes.memmove(ctypes.addressof(out) + offset, word.to_bytes(4, "little"), 4)
    return out


def _flushes_now() -> bool:
    """Whether this thread flushes: a subnormal float32 input reads as 0."""
    tiny = np.array([np.finfo(np.float32).smallest_subnormal], np.float32)
    return bool((tiny * np.float32(1.0))[0] == 0)


def _check() -> bool:
    """Set the mode once, see that it flushes, and put the environment back."""
    if _LAYOUT is None:
        return False
    try:
        saved = _get_env()
        try:
            _set_env(_flushing_env(saved))
            works = _flushes_now()
        finally:
            _set_env(saved)
        return works
    except OSError:
        return False


#: Whether :func:`flushed` flushes on this machine.
SUPPORTED = _check()


@contextlib.contextmanager
def flushed() -> Iterator[None]:
    """Run the block with FTZ and DAZ on in this thread (no-op where not ``SUPPORTED``)."""
    if not SUPPORTED:
        yield
        return
    saved = _get_env()
    _set_env(_flushing_env(saved))
    try:
        yield
    finally:
        _set_env(saved)


def flushing(fn: F) -> F:
    """Decorate ``fn`` to run inside :func:`flushed`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with flushed():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
