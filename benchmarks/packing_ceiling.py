"""How far trial packing can go in NumPy: the issue's own experiment beside ``fit_packed``.

Issue 15 set its 3x target from a quick measurement: a plain training step
(2-64-2, batch 32, float32, one thread), 8 trials stacked with ``np.matmul``
on 3-D arrays against 8 separate 2-D steps. This benchmark repeats that
experiment (``plain``: forward, softmax + cross-entropy gradient, backward,
SGD update; nothing else) and sets beside it, for the same network and k:

``fit (steps)`` / ``fit_packed (steps)``
    the trainer's own runs (``fit`` k times against one ``fit_packed``), with
    the after-epoch measurements (training-sample accuracy, validation loss
    and accuracy, live ReLU units) taken out of both sides' time;
``whole run``
    the same runs, everything included (``packing_speed.py``'s ratio);
``measured after epochs``
    the share of the packed run spent in those measurements. They are the
    same arithmetic packed or solo (each trial's network on each set), so
    they dilute the ratio towards 1.

Throughput ratio = k solo / packed, CPU seconds of this process, median of
``--repeats`` alternating rounds. Usage::

    python benchmarks/packing_ceiling.py [--repeats N] [--k 8]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.packing_speed import alternating, sweep, synthetic  # noqa: E402
from services.trainer import epoch_metrics, fit  # noqa: E402
from services.trainer.packed import fit_packed  # noqa: E402

ROWS, EPOCHS, BATCH = 4096, 5, 32


class PlainStep:
    """The issue's plain step for ``k`` stacked networks (k=None: one, 2-D)."""

    def __init__(self, sizes: list[int], batch: int, k: int | None, seed: int = 0):
        rng = np.random.default_rng(seed)
        lead = () if k is None else (k,)
        f = np.float32
        self.W = [
            (rng.standard_normal(lead + (a, b)) * np.sqrt(2 / a)).astype(f)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        ]
        self.b = [np.zeros(lead + (1, b), f) for b in sizes[1:]]
        self.X = rng.standard_normal(lead + (batch, sizes[0])).astype(f)
        Y = np.zeros(lead + (batch, sizes[-1]), f)
        Y[..., 0] = 1
        self.Y, self.lr, self.n = Y, f(0.01), batch

    def step(self) -> None:
        W, b, swap = self.W, self.b, (lambda a: np.swapaxes(a, -1, -2))
        acts, zs = [self.X], []
        for i, (w, c) in enumerate(zip(W, b, strict=True)):
            z = np.matmul(acts[-1], w) + c
            zs.append(z)
            acts.append(np.maximum(z, 0) if i < len(W) - 1 else z)
        O = acts[-1]
        E = np.exp(O - O.max(axis=-1, keepdims=True))
        d = (E / E.sum(axis=-1, keepdims=True) - self.Y) / self.n  # softmax + CE: y^ - y
        for i in range(len(W) - 1, -1, -1):
            gW = np.matmul(swap(acts[i]), d)
            gb = d.sum(axis=-2, keepdims=True)
            if i > 0:
                d = np.matmul(d, swap(W[i])) * (zs[i - 1] > 0)
            W[i] -= self.lr * gW
            b[i] -= self.lr * gb


def plain_ratio(sizes, k: int, steps: int, repeats: int) -> dict[str, float]:
    """The plain step's ratio, and its microseconds per solo step and per pack step."""
    solos = [PlainStep(sizes, BATCH, None, seed=i) for i in range(k)]
    pack = PlainStep(sizes, BATCH, k)

    def run_solo():
        for _ in range(steps):
            for s in solos:
                s.step()

    def run_pack():
        for _ in range(steps):
            pack.step()

    solo, packed, ratio = alternating(run_solo, run_pack, repeats)
    return {"solo": solo / steps / k * 1e6, "packed": packed / steps * 1e6, "ratio": ratio}


class _MeasureClock:
    """Adds up the CPU time of ``EpochMetrics.measure`` (solo and packed runs call it)."""

    def __init__(self):
        self.seconds = 0.0
        self._original = epoch_metrics.EpochMetrics.measure

    def __enter__(self):
        original, clock = self._original, self

        def timed(metrics):
            t0 = time.process_time()
            try:
                return original(metrics)
            finally:
                clock.seconds += time.process_time() - t0

        epoch_metrics.EpochMetrics.measure = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc):
        epoch_metrics.EpochMetrics.measure = self._original  # type: ignore[method-assign]


def trainer_ratios(sizes, k: int, repeats: int) -> dict[str, float]:
    data = synthetic(sizes, ROWS)
    specs = sweep(sizes, BATCH, EPOCHS, k)
    fit_packed(specs, data=data)
    fit(specs[0], data=data)
    rows: dict[str, list[float]] = {
        "whole": [],
        "steps": [],
        "share": [],
        "solo_us": [],
        "packed_us": [],
    }
    n_steps = EPOCHS * -(-ROWS // BATCH)  # synthetic() trains on ROWS rows
    for i in range(repeats):
        times = {}
        for side in ("solo", "packed") if i % 2 == 0 else ("packed", "solo"):
            with _MeasureClock() as clock:
                t0 = time.process_time()
                if side == "solo":
                    for s in specs:
                        fit(s, data=data)
                else:
                    fit_packed(specs, data=data)
                times[side] = (time.process_time() - t0, clock.seconds)
        (solo, solo_m), (packed, packed_m) = times["solo"], times["packed"]
        rows["whole"].append(solo / packed)
        rows["steps"].append((solo - solo_m) / (packed - packed_m))
        rows["share"].append(packed_m / packed)
        rows["solo_us"].append((solo - solo_m) / k / n_steps * 1e6)
        rows["packed_us"].append((packed - packed_m) / n_steps * 1e6)
    return {key: statistics.median(values) for key, values in rows.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    threadpool_limits(1)
    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()]
    print(f"BLAS {blas}; load average before: {os.getloadavg()}")
    print(f"float32, batch {BATCH}, k = {args.k}; ratio = {args.k} solo / 1 packed (CPU time)")
    print(
        f"{'network':<12} {'plain step':>10} {'trainer steps':>13} {'whole run':>9} "
        f"{'measured after epochs':>22}   us per step, solo / pack: plain, trainer"
    )
    for sizes in ([2, 64, 2], [2, 64, 64, 2]):
        plain = plain_ratio(sizes, args.k, 2000, args.repeats)
        ours = trainer_ratios(sizes, args.k, args.repeats)
        print(
            f"{'-'.join(map(str, sizes)):<12} {plain['ratio']:>9.2f}x {ours['steps']:>12.2f}x "
            f"{ours['whole']:>8.2f}x {ours['share']:>21.0%}   "
            f"{plain['solo']:.1f} / {plain['packed']:.1f}, "
            f"{ours['solo_us']:.1f} / {ours['packed_us']:.1f}",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
